"""Masking, the masked-token loss, presets and override validation of the discrete family."""

from __future__ import annotations

import math

import pytest
import torch

from genhancer.denoisers.discrete import (
    PRESETS,
    MaskedTokenTransformer,
    apply_mask,
    masked_token_loss,
    network_kwargs,
    preset_parameter_count,
    random_mask,
    sample_mask_ratios,
    split_overrides,
)
from genhancer.utils.errors import ConfigError


def test_loss_on_a_hand_built_case_counts_masked_positions_only():
    # 3 positions, 2 codes; positions 0 and 2 are masked
    logits = torch.tensor([[[math.log(3.0), 0.0], [50.0, -50.0], [0.0, 0.0]]], requires_grad=True)
    targets = torch.tensor([[0, 1, 0]])  # position 1 is predicted terribly, but it is not masked
    mask = torch.tensor([[True, False, True]])
    loss = masked_token_loss(logits, targets, mask)
    expected = (math.log(4 / 3) + math.log(2)) / 2  # -log(3/4) and -log(1/2), averaged over 2 masked tokens
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert torch.all(logits.grad[0, 1] == 0)  # no gradient through the unmasked position
    assert torch.all(logits.grad[0, 0] != 0) and torch.all(logits.grad[0, 2] != 0)


def test_loss_averages_over_all_masked_positions_of_the_batch():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5, 7), torch.randint(7, (2, 5))
    mask = torch.tensor([[True, False, False, False, False], [True, True, True, False, True]])
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 7), targets.reshape(-1), reduction="none"
    )
    assert masked_token_loss(logits, targets, mask).item() == pytest.approx(
        per_token[mask.reshape(-1)].mean().item(), abs=1e-6
    )
    with pytest.raises(ValueError):
        masked_token_loss(logits, targets, torch.zeros_like(mask))


def test_random_mask_hides_exactly_round_ratio_times_n():
    g = torch.Generator().manual_seed(0)
    ratios = torch.tensor([0.5, 0.7, 0.9, 0.0, 1.0])
    mask = random_mask(ratios, 10, g)
    assert mask.dtype == torch.bool and mask.shape == (5, 10)
    assert mask.sum(1).tolist() == [5, 7, 9, 1, 10]  # at least one masked token per sample
    ids = torch.arange(10).repeat(5, 1)
    masked = apply_mask(ids, mask, mask_id=99)
    assert torch.equal(masked == 99, mask) and torch.equal(masked[~mask], ids[~mask])


def test_mask_positions_vary_and_follow_the_generator():
    a = random_mask(torch.full((64,), 0.5), 16, torch.Generator().manual_seed(1))
    b = random_mask(torch.full((64,), 0.5), 16, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert 0.3 < a.float().mean(0).min() and a.float().mean(0).max() < 0.7  # every position gets masked


def test_mask_ratio_fixed_or_drawn_from_the_range():
    assert torch.equal(sample_mask_ratios(3, 0.7, None), torch.full((3,), 0.7))
    r = sample_mask_ratios(1000, 0.7, (0.5, 0.9), torch.Generator().manual_seed(0))
    assert r.min() >= 0.5 and r.max() <= 0.9 and abs(r.mean().item() - 0.7) < 0.02


@pytest.mark.parametrize("preset", ["2", "4", "6", "8"])
def test_depth_presets_build(preset):
    """Paper-width presets built on the meta device (no memory); depth as named, params grow with depth."""
    kwargs = network_kwargs(preset, codebook_size=8192)
    with torch.device("meta"):
        model = MaskedTokenTransformer(**kwargs)
    assert len(model.blocks) == int(preset) and model.config.width == 1024
    assert preset_parameter_count(preset) == sum(p.numel() for p in model.parameters())
    if preset != "2":
        assert preset_parameter_count(preset) > preset_parameter_count(str(int(preset) - 2))


def test_toy_preset_runs_forward_and_backward():
    model = MaskedTokenTransformer(**network_kwargs("toy", codebook_size=16))
    ids = torch.randint(17, (2, 4, 4))  # 16 = the mask id
    logits = model(ids, torch.randn(2, 64), torch.randn(2, 3, 64))
    assert logits.shape == (2, 16, 16)
    logits.sum().backward()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert set(PRESETS) == {"toy", "2", "4", "6", "8"}


def test_overrides_are_checked():
    network, objective = split_overrides({"depth": 3, "mask_ratio_range": [0.5, 0.9]})
    assert network == {"depth": 3} and objective["mask_ratio_range"] == (0.5, 0.9)
    assert network_kwargs("toy", 16, {"depth": 3})["depth"] == 3
    for bad in (
        {"mask_ratio": 1.5},
        {"mask_ratio_range": [0.9, 0.5]},
        {"codebook_size": 3},
        {"deepth": 6},
        {"sample_temperature": -1},
    ):
        with pytest.raises(ConfigError):
            split_overrides(bad)
    with pytest.raises(ConfigError, match="known presets"):
        network_kwargs("lightweight", 16)
