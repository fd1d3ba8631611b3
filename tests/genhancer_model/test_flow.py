"""Flow-matching math against hand-computed values (convention: t = 1 is pure noise)."""

from __future__ import annotations

import math

import pytest
import torch

from genhancer import flow


def test_interpolate_and_target_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    noise = torch.tensor([[0.0, 4.0], [-1.0, 1.0]])
    t = torch.tensor([0.25, 1.0])
    # row 0: 0.75*x + 0.25*noise = [0.75, 2.5]; row 1 (t=1): pure noise
    assert torch.allclose(flow.interpolate(x, noise, t), torch.tensor([[0.75, 2.5], [-1.0, 1.0]]))
    assert torch.allclose(flow.interpolate(x, noise, torch.zeros(2)), x)
    assert torch.equal(flow.velocity_target(x, noise), torch.tensor([[-1.0, 2.0], [-4.0, 2.0]]))


def test_interpolate_broadcasts_over_image_dims():
    x, noise = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    out = flow.interpolate(x, noise, torch.tensor([0.1, 0.9]))
    assert torch.allclose(out[0], torch.full((3, 4, 4), 0.1)) and torch.allclose(
        out[1], torch.full((3, 4, 4), 0.9)
    )


def test_loss_is_plain_mse():
    pred, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 0.0])
    assert flow.flow_matching_loss(pred, target).item() == pytest.approx((0 + 4 + 9) / 3)


def test_high_pass_keeps_edges_and_drops_flat_areas():
    flat = torch.full((1, 2, 5, 5), 3.0)
    assert torch.equal(flow.high_pass(flat), torch.zeros_like(flat))  # a plain colour carries no detail
    dot = torch.zeros(1, 1, 5, 5)
    dot[0, 0, 2, 2] = 9.0
    hp = flow.high_pass(dot)
    assert hp[0, 0, 2, 2].item() == pytest.approx(9.0 - 1.0)  # the dot minus its 3x3 mean (9 / 9)
    assert hp[0, 0, 1, 1].item() == pytest.approx(-1.0) and hp[0, 0, 0, 0].item() == 0.0  # far corner: flat
    # at the border the mean is over the pixels that exist: a corner pixel averages 4 of them
    edge = torch.zeros(1, 1, 3, 3)
    edge[0, 0, 0, 0] = 4.0
    assert flow.high_pass(edge)[0, 0, 0, 0].item() == pytest.approx(4.0 - 1.0)


def test_detail_loss_ignores_an_error_in_flat_colour_and_sees_one_at_an_edge():
    target = torch.zeros(2, 3, 6, 6)
    assert flow.detail_loss(target + 0.5, target).item() == pytest.approx(0.0, abs=1e-12)
    pred = target.clone()
    pred[:, :, 3, 3] = 1.0
    plain, detail = flow.flow_matching_loss(pred, target).item(), flow.detail_loss(pred, target).item()
    assert plain == pytest.approx(1 / 36)
    assert detail == pytest.approx((8 / 9) ** 2 / 36 + 8 * (1 / 9) ** 2 / 36)


def test_logit_normal_timesteps_match_sigmoid_of_scaled_normal():
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    t = flow.sample_timesteps(5, "logit_normal", 0.5, g1)
    expected = torch.sigmoid(0.5 * torch.randn(5, generator=g2))
    assert torch.allclose(t, expected)
    big = flow.sample_timesteps(20000, "logit_normal", 1.0, torch.Generator().manual_seed(1))
    assert big.min() > 0 and big.max() < 1 and abs(big.mean().item() - 0.5) < 0.01
    # median of sigmoid(N(0,1)) is 0.5, and P(t < sigmoid(1)) = Phi(1) ~ 0.841
    assert abs((big < 1 / (1 + math.exp(-1))).float().mean().item() - 0.8413) < 0.01


def test_a_logit_mean_shifts_the_timesteps_toward_less_noise():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    t = flow.sample_timesteps(6, "logit_normal", 1.0, g1, logit_mean=-1.0)
    assert torch.allclose(t, torch.sigmoid(-1.0 + torch.randn(6, generator=g2)))
    big = flow.sample_timesteps(20000, "logit_normal", 1.0, torch.Generator().manual_seed(1), logit_mean=-1.0)
    assert abs(big.median().item() - 1 / (1 + math.e)) < 0.01  # median sigmoid(-1) ~ 0.269


def test_uniform_timesteps_and_unknown_mode():
    t = flow.sample_timesteps(1000, "uniform", generator=torch.Generator().manual_seed(0))
    assert t.shape == (1000,)
    assert torch.equal(t, torch.rand(1000, generator=torch.Generator().manual_seed(0)))  # U(0, 1), as drawn
    big = flow.sample_timesteps(20000, "uniform", generator=torch.Generator().manual_seed(1))
    # uniform, not logit-normal: a quarter of the mass in each quarter of (0, 1)
    quarters = torch.histc(big, bins=4, min=0.0, max=1.0) / len(big)
    assert torch.allclose(quarters, torch.full((4,), 0.25), atol=0.015)
    with pytest.raises(ValueError, match="uniform"):
        flow.sample_timesteps(3, "cosine")


def test_euler_with_exact_velocity_recovers_data():
    """For a straight path from x0 to noise, v = noise - x0 is constant: Euler is exact in any step count."""
    x0 = torch.tensor([[2.0, -3.0]])
    noise = torch.tensor([[0.5, 0.5]])
    out = flow.euler_sample(lambda x, t: noise - x0, (1, 2), steps=3, noise=noise)
    assert torch.allclose(out, x0, atol=1e-6)


def test_euler_steps_by_hand():
    # dx/dt = x (v = x): from x(1) = 1, two steps t: 1 -> 0.5 -> 0 with dt = -0.5: 1 * 0.5 * 0.5 = 0.25
    seen = []

    def v(x, t):
        seen.append(t.tolist())
        return x

    out = flow.euler_sample(v, (1, 1), steps=2, noise=torch.ones(1, 1))
    assert out.item() == pytest.approx(0.25)
    assert seen == [[1.0], [0.5]]  # evaluated at the start of each step, from the noise end
