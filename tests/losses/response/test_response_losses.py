"""Response losses against hand-computed values and the invariants of their papers."""

import math

import pytest
import torch
from pydantic import ValidationError

from distil.losses import DKD, LOSSES, HintonKD, LogitMAE, LogitMSE, RegressionKD, SoftTargetCE
from distil.losses.response.dkd import dkd_loss
from distil.losses.response.hinton import hinton_kd_loss

LN3 = math.log(3)


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


# ----- Hinton KD -----

def test_hinton_value_by_hand_t1():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])
    # p_t = [3/4, 1/4], p_s = [1/2, 1/2]
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert hinton_kd_loss(s, t, temperature=1.0, alpha=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_hinton_value_by_hand_t2_with_ce():
    s, t, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]]), torch.tensor([1])
    p_t = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]  # softmax([ln3/2, 0])
    soft = 4 * kl(p_t, [0.5, 0.5])
    hard = math.log(2)  # CE of uniform prediction
    expected = 0.3 * hard + 0.7 * soft
    assert hinton_kd_loss(s, t, y, temperature=2.0, alpha=0.3).item() == pytest.approx(expected, rel=1e-6)


def test_hinton_zero_when_student_equals_teacher():
    z = torch.randn(5, 7)
    assert hinton_kd_loss(z, z.clone(), temperature=3.0, alpha=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_hinton_alpha_one_is_plain_cross_entropy():
    s, t, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    by_hand = -sum(math.log(softmax(s[i].tolist())[y[i]]) for i in range(6)) / 6
    assert hinton_kd_loss(s, t, y, alpha=1.0).item() == pytest.approx(by_hand, rel=1e-5)


def test_hinton_gradient_is_t_times_probability_gap():
    """d/dz_s of T^2 KL(p_t^T || p_s^T) = T (p_s^T - p_t^T) / B: the T^2 factor keeps it O(1) in T."""
    s = torch.randn(3, 5, requires_grad=True)
    t = torch.randn(3, 5)
    for temp in (1.0, 4.0, 10.0):
        (grad,) = torch.autograd.grad(hinton_kd_loss(s, t, temperature=temp, alpha=0.0), s)
        expected = temp * (torch.softmax(s / temp, -1) - torch.softmax(t / temp, -1)) / 3
        torch.testing.assert_close(grad, expected.detach(), rtol=1e-5, atol=1e-6)


def test_hinton_high_temperature_gradient_approaches_logit_matching():
    """Hinton et al. sec 2.1: for large T and zero-mean logits the gradient tends to (z_s - z_t)/(C B)."""
    s = torch.randn(2, 4)
    s = (s - s.mean(-1, keepdim=True)).requires_grad_()
    t = torch.randn(2, 4)
    t = t - t.mean(-1, keepdim=True)
    (grad,) = torch.autograd.grad(hinton_kd_loss(s, t, temperature=1000.0, alpha=0.0), s)
    torch.testing.assert_close(grad, ((s - t) / (4 * 2)).detach(), rtol=1e-2, atol=1e-4)


def test_hinton_direction_moves_student_towards_teacher():
    s = torch.zeros(1, 3, requires_grad=True)
    t = torch.tensor([[5.0, 0.0, 0.0]])
    (grad,) = torch.autograd.grad(hinton_kd_loss(s, t, alpha=0.0), s)
    assert grad[0, 0] < 0 and grad[0, 1] > 0 and grad[0, 2] > 0  # descent raises the teacher's class


def test_hinton_sample_weight():
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    first = hinton_kd_loss(s[:1], t[:1], alpha=0.0)
    weighted = hinton_kd_loss(s, t, alpha=0.0, sample_weight=torch.tensor([2.0, 0.0]))
    assert weighted.item() == pytest.approx(first.item(), rel=1e-6)


def test_hinton_rejects_bad_values_and_shapes():
    with pytest.raises(ValidationError, match="temperature"):
        HintonKD(temperature=-2)
    with pytest.raises(ValidationError, match="alpha"):
        HintonKD(alpha=1.5)
    with pytest.raises(ValueError, match="same number of classes"):
        hinton_kd_loss(torch.randn(2, 3), torch.randn(2, 4), alpha=0.0)
    with pytest.raises(ValueError, match="needs hard labels"):
        hinton_kd_loss(torch.randn(2, 3), torch.randn(2, 3), alpha=0.5)


# ----- logit MSE, soft-target CE -----

def test_logit_mse_by_hand():
    s, t = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert LogitMSE()(s, t).item() == pytest.approx(((1 + 4) / 2 + 4 / 2) / 2)


def test_logit_mae_by_hand():
    s, t = torch.tensor([[1.0, -2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 4.0]])
    assert LogitMAE()(s, t).item() == pytest.approx(((1 + 2) / 2 + 4 / 2) / 2)
    weights = torch.tensor([1.0, 3.0])  # per-sample weights: rows of 1.5 and 2.0
    assert LogitMAE()(s, t, weights).item() == pytest.approx((1 * 1.5 + 3 * 2.0) / 4)


def test_logit_mae_gradient_is_the_sign_and_stays_finite_where_equal():
    s = torch.tensor([[2.0, 0.0, 1e30]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0, -1e30]])
    (g,) = torch.autograd.grad(LogitMAE()(s, t), s)
    assert g.tolist()[0] == pytest.approx([1 / 3, 0.0, 1 / 3])  # sign(z_s - z_t) / C, 0 at a tie
    with pytest.raises(ValueError, match="must predict the same number of classes"):
        LogitMAE()(torch.zeros(2, 3), torch.zeros(2, 4))


def test_soft_target_ce_minimum_is_teacher_entropy():
    t = torch.tensor([[LN3, 0.0]])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert SoftTargetCE(temperature=1.0)(t.clone(), t).item() == pytest.approx(entropy, rel=1e-6)


def test_soft_target_ce_has_same_gradient_as_kl():
    s = torch.randn(4, 6, requires_grad=True)
    t = torch.randn(4, 6)
    (g1,) = torch.autograd.grad(SoftTargetCE(temperature=3.0)(s, t), s)
    (g2,) = torch.autograd.grad(hinton_kd_loss(s, t, temperature=3.0, alpha=0.0), s)
    torch.testing.assert_close(g1, g2)


# ----- DKD -----

def test_dkd_by_hand():
    zs, zt, y = [1.0, 0.0, -1.0], [2.0, 1.0, 0.0], 0
    ps, pt = softmax(zs), softmax(zt)
    tckd = kl([pt[0], 1 - pt[0]], [ps[0], 1 - ps[0]])
    nckd = kl(softmax(zt[1:]), softmax(zs[1:]))
    loss = dkd_loss(torch.tensor([zs]), torch.tensor([zt]), torch.tensor([y]), alpha=2.0, beta=3.0, temperature=1.0)
    assert loss.item() == pytest.approx(2 * tckd + 3 * nckd, rel=1e-5)


def test_dkd_reassembles_classical_kd():
    """Zhao et al. eq. 5: KD = TCKD + (1 - p_t^target) NCKD, sample by sample."""
    s, t, y = torch.randn(1, 5), torch.randn(1, 5), torch.tensor([2])
    temp = 2.0
    p_target = torch.softmax(t / temp, -1)[0, 2].item()
    dkd = dkd_loss(s, t, y, alpha=1.0, beta=1 - p_target, temperature=temp)
    kd = hinton_kd_loss(s, t, temperature=temp, alpha=0.0)
    assert dkd.item() == pytest.approx(kd.item(), rel=1e-5)


def test_dkd_zero_at_identity_and_needs_labels():
    z = torch.randn(4, 5)
    assert DKD()(z, z.clone(), torch.tensor([0, 1, 2, 3])).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="labels"):
        DKD()(z, z, None)


# ----- regression -----

def test_regression_kd_by_hand():
    s, t, y = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]]), torch.tensor([1.0, 1.0])
    assert RegressionKD()(s, t).item() == pytest.approx((1 + 4) / 2)
    mixed = RegressionKD(alpha=0.5)(s, t, y).item()
    assert mixed == pytest.approx(0.5 * 2.5 + 0.5 * (0 + 4) / 2)


# ----- contracts over every registered logit-level distillation loss -----

LOGIT_ONLY = {"student_logits", "teacher_logits", "labels", "sample_weight"}
PURE_KD = {"hinton_kd": {"alpha": 0.0}, "regression_kd": {}}
SOFT_WITH_UNLABELLED = {"mutual_kd"}  # its CE part vanishes on unlabelled rows, leaving the KL


def _logit_losses():
    import inspect

    names = []
    for name in LOSSES.names():
        cls = LOSSES.get(name)
        needs = set(inspect.signature(cls.forward).parameters) - {"self"}
        if cls.__module__.startswith("distil.losses.response") and "teacher_logits" in needs and needs <= LOGIT_ONLY:
            names.append(name)
    return names


@pytest.mark.parametrize("name", _logit_losses())
def test_contract_finite_and_stationary_at_identity(name):
    import inspect

    loss = LOSSES.get(name)(**PURE_KD.get(name, {}))
    takes_labels = "labels" in inspect.signature(loss.forward).parameters
    given = torch.full((4,), -100) if name in SOFT_WITH_UNLABELLED else torch.tensor([0, 1, 2, 3])
    labels = {"labels": given} if takes_labels else {}
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    value = loss(student_logits=s, teacher_logits=t, **labels)
    assert torch.isfinite(value)
    value.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    # gradient at student == teacher vanishes: identity is a minimum of a distillation loss
    z = torch.randn(4, 5)
    s2 = z.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(student_logits=s2, teacher_logits=z, **labels), s2)
    assert g.abs().max() < 1e-5


def test_unlabelled_samples_count_only_in_the_soft_term():
    from distil.losses import CrossEntropy

    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, -100, 2, -100])
    kept = torch.tensor([0, 2])
    ce_kept = -sum(math.log(softmax(s[i].tolist())[y[i]]) for i in kept.tolist()) / 2
    assert CrossEntropy()(s, y).item() == pytest.approx(ce_kept, rel=1e-5)
    soft = hinton_kd_loss(s, t, temperature=2.0, alpha=0.0).item()
    mixed = hinton_kd_loss(s, t, y, temperature=2.0, alpha=0.25).item()
    assert mixed == pytest.approx(0.75 * soft + 0.25 * ce_kept, rel=1e-5)


# ----- unlabelled rows and label checks (issue 14, items 2-3) -----

def dkd_formula(s, t, y, alpha, beta, temperature, w=None):
    """Zhao et al. eq. 7 row by row in plain arithmetic, a weighted mean over labelled rows."""
    w = [1.0] * len(y) if w is None else w
    total, norm = 0.0, 0.0
    for zs, zt, yi, wi in zip(s.tolist(), t.tolist(), y.tolist(), w):
        if yi == -100:
            continue
        ps, pt = softmax([v / temperature for v in zs]), softmax([v / temperature for v in zt])
        tckd = kl([pt[yi], 1 - pt[yi]], [ps[yi], 1 - ps[yi]])
        rest = [c for c in range(len(zs)) if c != yi]
        nckd = kl(softmax([zt[c] / temperature for c in rest]), softmax([zs[c] / temperature for c in rest]))
        total += wi * (alpha * tckd + beta * nckd) * temperature**2
        norm += wi
    return total / norm


@pytest.mark.parametrize("weighted", [False, True])
def test_dkd_leaves_unlabelled_rows_out(weighted):
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 4) * 2
    y = torch.tensor([1, -100, 3, 0, -100, 2])
    w = [0.5, 2.0, 1.0, 3.0, 1.0, 0.25] if weighted else None
    got = dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0,
                   sample_weight=torch.tensor(w) if weighted else None)
    assert got.item() == pytest.approx(dkd_formula(s, t, y, 1.0, 8.0, 4.0, w), rel=1e-5)


def test_dkd_without_labelled_rows_is_zero_with_a_zero_gradient():
    s = torch.randn(4, 5, requires_grad=True)
    loss = DKD()(s, torch.randn(4, 5), torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_label_count_mismatch_names_the_tensors():
    from distil.errors import ConfigError
    from distil.losses import CrossEntropy

    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (7,))
    msg = r"labels has 7 entries but student_logits has 8 rows \(shape \(8, 10\)\)"
    with pytest.raises(ConfigError, match="dkd: " + msg):
        dkd_loss(s, t, y)
    with pytest.raises(ConfigError, match="hinton_kd: " + msg):
        hinton_kd_loss(s, t, y, alpha=0.5)
    with pytest.raises(ConfigError, match="cross_entropy: " + msg):
        CrossEntropy()(s, y)
    with pytest.raises(ConfigError, match=r"dkd: labels has shape \(8, 1\) but must be \(8,\)"):
        dkd_loss(s, t, torch.zeros(8, 1, dtype=torch.long))
    with pytest.raises(ConfigError, match="dkd: labels must be integer class indices"):
        dkd_loss(s, t, torch.zeros(8))


def test_regression_target_mismatch_names_the_tensors():
    from distil.errors import ConfigError
    from distil.losses import MSE

    s, t = torch.randn(8, 2), torch.randn(8, 2)
    msg = r"regression_kd: labels has shape \(8,\) but student_logits has shape \(8, 2\)"
    with pytest.raises(ConfigError, match=msg):
        RegressionKD(alpha=0.5)(s, t, torch.randn(8))
    with pytest.raises(ConfigError, match=r"mse: labels has shape \(7, 2\)"):
        MSE()(s, torch.randn(7, 2))
    assert MSE()(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])).item() == pytest.approx((1 + 4) / 2)


# ----- contracts over every registered loss with a hard-label part -----

# The configuration of each class-label loss that leaves only its label-dependent part; every
# registered response loss taking `labels` must be listed here or in REGRESSION.
HARD_ONLY = {"cross_entropy": {}, "hinton_kd": {"alpha": 1.0}, "logit_standardization": {"alpha": 1.0}, "dkd": {},
             "teacher_annealing": {"start": 1.0, "end": 1.0}}
REGRESSION = {"mse", "regression_kd"}  # targets are floats: no unlabelled marker
# Labels that weigh teachers rather than form a hard term, or a hard term with no option that
# isolates it; each is checked against its formula in tests/losses/response/test_scheme_losses.py.
OTHER_LABEL_USE = {"multi_teacher_kd", "mutual_kd"}


def _label_losses():
    import inspect

    return [
        n for n in LOSSES.names()
        if LOSSES.get(n).__module__.startswith("distil.losses.response")
        and "labels" in inspect.signature(LOSSES.get(n).forward).parameters
    ]


def test_every_label_taking_response_loss_is_classified():
    missing = set(_label_losses()) - set(HARD_ONLY) - REGRESSION - OTHER_LABEL_USE
    assert not missing, f"add these losses to HARD_ONLY (with the options that isolate the hard part): {missing}"


def _call(loss, s, t, y, w=None):
    import inspect

    params = inspect.signature(loss.forward).parameters
    kwargs = {"student_logits": s, "labels": y, "sample_weight": w}
    if "teacher_logits" in params:
        kwargs["teacher_logits"] = t
    return loss(**kwargs)


@pytest.mark.parametrize("name", sorted(HARD_ONLY))
@pytest.mark.parametrize("weighted", [False, True])
def test_contract_hard_part_is_a_mean_over_labelled_rows(name, weighted):
    """Unlabelled rows (-100) change neither the value nor the gradient of the hard part."""
    torch.manual_seed(0)
    loss = LOSSES.get(name)(**HARD_ONLY[name])
    s, t = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5)
    y = torch.tensor([0, -100, 2, -100, 4, -100, 1, -100])
    w = torch.rand(8) + 0.1 if weighted else None
    kept = y != -100
    full = _call(loss, s, t, y, w)
    alone = _call(loss, s[kept], t[kept], y[kept], None if w is None else w[kept])
    assert full.item() == pytest.approx(alone.item(), rel=1e-5)
    (g,) = torch.autograd.grad(full, s)
    assert torch.all(g[~kept] == 0)


@pytest.mark.parametrize("name", sorted(HARD_ONLY))
def test_contract_no_labelled_row_gives_zero_and_a_zero_gradient(name):
    loss = LOSSES.get(name)(**HARD_ONLY[name])
    s = torch.randn(4, 5, requires_grad=True)
    value = _call(loss, s, torch.randn(4, 5), torch.full((4,), -100), torch.rand(4))
    (g,) = torch.autograd.grad(value, s)
    assert value.item() == 0.0
    assert torch.equal(g, torch.zeros_like(s))


DEGENERATE = {
    "constant_student": lambda: (torch.zeros(8, 10), torch.randn(8, 10) * 3),
    "constant_teacher": lambda: (torch.randn(8, 10) * 3, torch.zeros(8, 10)),
    "both_constant": lambda: (torch.full((8, 10), 2.0), torch.zeros(8, 10)),
    "saturated": lambda: (torch.randn(8, 10) * 1e3, torch.randn(8, 10) * 1e3),
}


def _degenerate_cases():
    import inspect

    cases = []
    for name in _logit_losses():
        init = inspect.signature(LOSSES.get(name).__init__).parameters
        temps = [None, 1e-3, 1e3] if "temperature" in init else [None]
        for tau in temps:
            for inputs in DEGENERATE:
                for labels in ("labelled", "unlabelled"):
                    cases.append((name, tau, inputs, labels))
    return cases


@pytest.mark.parametrize("name,tau,inputs,labels", _degenerate_cases())
def test_contract_finite_gradients_on_degenerate_inputs(name, tau, inputs, labels):
    """Constant rows and columns, saturated softmaxes, extreme temperatures, batches without a
    label: the value and every gradient stay finite (the hard part mixed in where there is one)."""
    import inspect

    cls = LOSSES.get(name)
    init = inspect.signature(cls.__init__).parameters
    options = dict(PURE_KD.get(name, {}))
    if "alpha" in init and name != "dkd":
        options["alpha"] = 0.5
    if tau is not None:
        options["temperature"] = tau
    torch.manual_seed(0)
    zs, zt = DEGENERATE[inputs]()
    s = zs.requires_grad_()
    y = torch.randint(0, 10, (8,)) if labels == "labelled" else torch.full((8,), -100)
    if name in REGRESSION:
        y = torch.randn(8, 10)
    takes_labels = "labels" in inspect.signature(cls.forward).parameters
    value = cls(**options)(student_logits=s, teacher_logits=zt, **({"labels": y} if takes_labels else {}))
    (g,) = torch.autograd.grad(value, s)
    assert torch.isfinite(value)
    assert torch.isfinite(g).all()
