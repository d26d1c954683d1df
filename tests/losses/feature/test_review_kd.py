"""Review KD: HCL value, zero at identity, ABF shapes, gradients, errors."""

import pytest
import torch
from pydantic import ValidationError

from distil.errors import ConfigError
from distil.losses.feature.review_kd import ReviewKD, hcl_loss


def test_hcl_hand_computed_value():
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    t = torch.zeros(1, 1, 2, 2)
    # levels 4 and 2 are not smaller than the 2x2 map; level 1 (weight 1/2) pools to the mean 2.5
    full = (1 + 4 + 9 + 16) / 4
    expected = (full + 0.5 * 2.5**2) / (1 + 0.5)
    assert hcl_loss(s, t).item() == pytest.approx(expected)


def test_hcl_all_levels_on_a_larger_map():
    s = torch.zeros(1, 1, 8, 8)
    s[0, 0, 0, 0] = 8.0
    t = torch.zeros(1, 1, 8, 8)
    # full: 64/64 = 1; 4x4 pooling: cell 0 = 8/4 = 2 -> 4/16; 2x2: 8/16 = 0.5 -> 0.25/4; 1x1: 8/64 -> 1/64
    expected = (1 + 0.5 * 4 / 16 + 0.25 * 0.25 / 4 + 0.125 / 64) / (1 + 0.5 + 0.25 + 0.125)
    assert hcl_loss(s, t).item() == pytest.approx(expected)


def test_hcl_zero_at_identity():
    x = torch.randn(2, 3, 8, 8)
    assert hcl_loss(x, x.clone()).item() == 0.0


def test_abf_shapes():
    loss = ReviewKD(mid_channels=6)
    s_shapes = [(2, 4, 8, 8), (2, 8, 4, 4), (2, 8)]
    t_shapes = [(2, 16, 8, 8), (2, 32, 4, 4), (2, 32)]
    loss.setup(s_shapes, t_shapes)
    assert len(loss.abfs) == 3
    assert loss.abfs[2].attention is None  # deepest stage: nothing deeper to fuse
    assert all(a.attention is not None for a in loss.abfs[:2])
    out, fused = loss.abfs[0](torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4))
    assert out.shape == (2, 16, 8, 8) and fused.shape == (2, 6, 8, 8)
    value = loss([torch.randn(*s) for s in s_shapes], [torch.randn(*t) for t in t_shapes])
    assert value.dim() == 0 and torch.isfinite(value)


def test_gradient_to_student_and_abfs_not_teacher():
    loss = ReviewKD(mid_channels=4)
    s = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 5, 2, 2, requires_grad=True)]
    t = [torch.randn(2, 6, 4, 4, requires_grad=True), torch.randn(2, 7, 2, 2, requires_grad=True)]
    loss.setup([x.shape for x in s], [x.shape for x in t])
    loss(s, t).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert loss.abfs[0].attention[0].weight.grad is not None
    assert all(x.grad is None for x in t)


def test_bad_arguments():
    with pytest.raises(ValidationError):
        ReviewKD(mid_channels=0)
    with pytest.raises(ValidationError):
        ReviewKD(levels=[2, 0])
    with pytest.raises(ValueError, match="equal shape"):
        hcl_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ConfigError, match="review_kd stage 0"):
        ReviewKD().setup([(2, 3, 4)], [(2, 3, 4)])
    with pytest.raises(RuntimeError, match="setup"):
        ReviewKD()([torch.zeros(2, 3, 2, 2)], [torch.zeros(2, 3, 2, 2)])


def test_hcl_levels_on_a_non_square_map_need_both_sides_larger():
    """8 x 2 map: levels 4 and 2 are not smaller than the width, so only level 1 counts. The
    reference code tests the height only and would also pool to 4 x 4 and 2 x 2 (stretching the
    width); docs/methods/feature.md states the difference."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 8, 2), torch.randn(2, 3, 8, 2)
    full = (s - t).pow(2).mean()
    pooled = (s.mean((2, 3)) - t.mean((2, 3))).pow(2).mean()
    assert hcl_loss(s, t).item() == pytest.approx(((full + 0.5 * pooled) / 1.5).item(), rel=1e-6)
    pool = torch.nn.functional.adaptive_avg_pool2d
    height_only = (full + sum(
        w * (pool(s, lv) - pool(t, lv)).pow(2).mean() for lv, w in ((4, 0.5), (2, 0.25), (1, 0.125))
    )) / 1.875
    assert hcl_loss(s, t).item() != pytest.approx(height_only.item(), rel=1e-3)
