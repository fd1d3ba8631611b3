"""MaskGIT-style parallel decoding: exact step count, monotone cosine schedule, every position filled."""

from __future__ import annotations

import pytest
import torch

from genhancer.denoisers.discrete import masked_counts, maskgit_decode
from genhancer.utils.errors import ConfigError


@pytest.mark.parametrize("n_tokens,steps", [(64, 8), (16, 16), (10, 1), (196, 12)])
def test_schedule_is_strictly_decreasing_to_zero(n_tokens, steps):
    counts = masked_counts(n_tokens, steps)
    assert len(counts) == steps and counts[-1] == 0
    assert all(a > b for a, b in zip([n_tokens, *counts], counts))


def test_schedule_follows_the_cosine():
    counts = masked_counts(1000, 10)
    assert counts[:3] == [987, 951, 891]  # floor(1000 cos(pi/2 t/10))
    with pytest.raises(ConfigError):
        masked_counts(4, 5)  # more steps than tokens


@pytest.mark.parametrize("temperature,choice", [(1.0, 4.5), (0.0, 0.0)])
def test_decoding_fills_every_position_in_exactly_n_steps(temperature, choice):
    k, n, steps, mask_id = 5, 12, 6, 5
    seen: list[torch.Tensor] = []
    logits_bias = torch.randn(2, n, k, generator=torch.Generator().manual_seed(0))

    def logits_fn(ids: torch.Tensor) -> torch.Tensor:
        seen.append(ids.clone())
        return logits_bias

    ids, trace = maskgit_decode(
        logits_fn,
        2,
        n,
        mask_id,
        steps,
        torch.Generator().manual_seed(0),
        temperature=temperature,
        choice_temperature=choice,
    )
    assert len(seen) == steps  # one network call per step
    assert (seen[0] == mask_id).all()  # starts from an all-mask grid
    assert ids.shape == (2, n) and not (ids == mask_id).any() and ids.min() >= 0 and ids.max() < k
    assert trace == masked_counts(n, steps)
    for before, after in zip(seen[1:], [*seen[2:], ids]):
        revealed = before != mask_id
        assert torch.equal(after[revealed], before[revealed])  # a revealed token is never changed
    if temperature == 0:
        assert torch.equal(ids, logits_bias.argmax(-1))


def test_decoding_is_reproducible_with_a_generator():
    def logits_fn(ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, 7)

    a, _ = maskgit_decode(logits_fn, 3, 9, 7, 3, torch.Generator().manual_seed(4), choice_temperature=1.0)
    b, _ = maskgit_decode(logits_fn, 3, 9, 7, 3, torch.Generator().manual_seed(4), choice_temperature=1.0)
    assert torch.equal(a, b)


def test_gumbel_noise_is_finite():
    from genhancer.denoisers.discrete import _gumbel

    g = _gumbel((4096,), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.isfinite(g).all() and abs(g.mean().item() - 0.5772) < 0.05  # Euler-Mascheroni mean
