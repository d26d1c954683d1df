"""Schemes as compositions of the one loop: peers, followers, alternating updates, annealing.

Each test checks a scheme's defining behaviour against a hand-written computation of it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distil.config import TrainConfig
from distil.distiller import Distiller, Term
from distil.errors import ConfigError
from distil.losses import CrossEntropy, HintonKD, MutualKD, TeacherAnnealing
from distil.roles import Follower, Peer
from distil.trainer import Trainer


def data(n=96, d=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return torch.utils.data.TensorDataset(x, (x[:, :c].argmax(1)))


def linear(seed, d=6, c=3):
    torch.manual_seed(seed)
    return nn.Linear(d, c)


def dml(student, peer, order="together"):
    return Distiller(student, None, {
        "student": Term(MutualKD(), student="student", teacher="peer"),
        "peer": Term(MutualKD(), student="peer", teacher="student"),
    }, models={"peer": Peer(peer)}, update_order=order)


def test_dml_gradient_of_each_peer_comes_from_the_others_predictions():
    student, peer = linear(0), linear(1)
    x, y = data(8).tensors
    out = dml(student, peer)((x, y))
    out["loss"].backward()
    for model, other in ((student, peer), (peer, student)):
        with torch.no_grad():
            p, q = F.softmax(model(x), -1), F.softmax(other(x), -1)
            g = ((p - F.one_hot(y, 3)) + (p - q)) / len(y)  # d(CE + KL(q || p)) / d logits
        torch.testing.assert_close(model.weight.grad, g.T @ x, rtol=1e-5, atol=1e-6)


def test_dml_trains_every_peer_through_the_trainer(tmp_path):
    student, peer = linear(0), linear(1)
    before = [m.weight.detach().clone() for m in (student, peer)]
    cfg = TrainConfig(epochs=1, output_dir=str(tmp_path / "run"), optimizer={"lr": 1e-2})
    trainer = Trainer(dml(student, peer), data(), data(48, seed=1), cfg, batch_size=16, progress=False)
    trainer.fit()
    assert all(not torch.equal(m.weight, b) for m, b in zip((student, peer), before))
    assert (tmp_path / "run" / "best" / "peer.safetensors").is_file()
    import json

    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"val/accuracy", "val/peer/accuracy", "train/student", "train/peer"} <= set(record)


def test_alternating_order_matches_a_hand_written_alternating_loop():
    x, y = data(16).tensors
    a, b = linear(0), linear(1)
    distiller = dml(a, b, "alternating")
    assert distiller.phases == [["student"], ["peer"]]
    opt = torch.optim.SGD(distiller.trainable_parameters(), lr=0.5)
    for phase in range(2):
        distiller((x, y), phase=phase)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    # by hand: update a against b, then b against the *updated* a
    ra, rb = linear(0), linear(1)
    for model, other in ((ra, rb), (rb, ra)):
        loss = F.cross_entropy(model(x), y) + F.kl_div(F.log_softmax(model(x), -1), F.softmax(other(x), -1).detach(),
                                                     reduction="batchmean")
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= 0.5 * g
    for got, want in ((a, ra), (b, rb)):
        torch.testing.assert_close(got.weight, want.weight, rtol=1e-5, atol=1e-6)


def _record_student_weights(student):
    seen = []
    from torch.optim.optimizer import register_optimizer_step_post_hook

    hook = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: seen.append(student.weight.detach().clone()))
    return seen, hook


@pytest.mark.parametrize("decay", [0.9, 0.0])
def test_ema_follower_is_the_formulas_average_of_the_student_weights(tmp_path, decay):
    student = linear(0)
    start = student.weight.detach().clone()
    distiller = Distiller(student, None, {"ce": CrossEntropy(), "kd": Term(HintonKD(alpha=0.0), teacher="mean")},
                          models={"mean": Follower(of="student", decay=decay)})
    seen, hook = _record_student_weights(student)
    try:
        cfg = TrainConfig(epochs=2, output_dir=str(tmp_path / "run"), optimizer={"lr": 1e-2})
        Trainer(distiller, data(), None, cfg, batch_size=16, progress=False).fit()
    finally:
        hook.remove()
    expected = start
    for w in seen:
        expected = decay * expected + (1 - decay) * w
    assert len(seen) == 12
    torch.testing.assert_close(distiller.followers["mean"].module.weight, expected, rtol=1e-5, atol=1e-6)
    assert int(distiller.followers["mean"].updates) == 12


def test_snapshot_follower_copies_the_student_every_k_steps(tmp_path):
    student = linear(0)
    distiller = Distiller(student, None, {"ce": CrossEntropy(), "kd": Term(HintonKD(alpha=0.0), teacher="past")},
                          models={"past": Follower(of="student", decay=None, every_steps=5)})
    seen, hook = _record_student_weights(student)
    try:
        cfg = TrainConfig(epochs=2, output_dir=str(tmp_path / "run"), optimizer={"lr": 1e-2})
        Trainer(distiller, data(), None, cfg, batch_size=16, progress=False).fit()
    finally:
        hook.remove()
    torch.testing.assert_close(distiller.followers["past"].module.weight, seen[9])  # the snapshot at step 10


class RecordsMix(TeacherAnnealing):
    """Teacher annealing that keeps the mixing weight it used at each call."""

    def __init__(self):
        super().__init__()
        self.used = []

    def forward(self, student_logits, teacher_logits, labels, progress=0.0, sample_weight=None):
        self.used.append(self.mix(progress))
        return super().forward(student_logits, teacher_logits, labels, progress, sample_weight)


def test_bam_mixing_weight_at_step_t_is_the_schedule(tmp_path):
    loss = RecordsMix()
    distiller = Distiller(linear(0), linear(1), {"bam": loss})
    cfg = TrainConfig(epochs=3, output_dir=str(tmp_path / "run"), optimizer={"lr": 1e-2})
    Trainer(distiller, data(), None, cfg, batch_size=16, progress=False).fit()
    total = 3 * 6
    assert loss.used == pytest.approx([t / total for t in range(total)])


def test_unknown_models_in_terms_are_named_with_the_models_that_exist():
    with pytest.raises(ConfigError, match="teacher 'peeer' is not a model of this run; models: student, peer"):
        Distiller(linear(0), None, {"kd": Term(HintonKD(), teacher="peeer")}, models={"peer": Peer(linear(1))})
    with pytest.raises(ConfigError, match="student 'teacher' is not a trained model"):
        Distiller(linear(0), linear(1), {"kd": Term(HintonKD(), student="teacher")})
    with pytest.raises(ConfigError, match="follows 'nobody'"):
        Distiller(linear(0), None, {"ce": CrossEntropy()}, models={"m": Follower(of="nobody")})
    with pytest.raises(ConfigError, match="cannot teach itself"):
        Distiller(linear(0), None, {"kd": Term(HintonKD(), teacher="student")})


class CrashAt(nn.Module):
    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, student_logits, labels):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt("crash")
        return F.cross_entropy(student_logits, labels)


def _scheme(kind, crash_at):
    student = linear(0)
    terms = {"crash": Term(CrashAt(crash_at), weight=0.0 + 1e-9)}  # a crash point, (almost) no gradient
    if kind == "dml":
        terms |= {"s": Term(MutualKD(), teacher="peer"), "p": Term(MutualKD(), student="peer", teacher="student")}
        return Distiller(student, None, terms, models={"peer": Peer(linear(1))})
    terms |= {"ce": CrossEntropy(), "kd": Term(HintonKD(alpha=0.0), teacher="mean")}
    return Distiller(student, None, terms, models={"mean": Follower(decay=0.8)})


@pytest.mark.parametrize("kind", ["dml", "ema"])
def test_resume_mid_scheme_ends_on_the_uninterrupted_weights(tmp_path, kind):
    def run(out, crash_at=None, resume=False):
        distiller = _scheme(kind, crash_at)
        cfg = TrainConfig(epochs=3, output_dir=str(out), checkpoint_every_steps=4,
                          optimizer={"name": "adamw", "lr": 1e-2})
        Trainer(distiller, data(), None, cfg, batch_size=16, progress=False).fit(resume=resume)
        return distiller.trainable().state_dict()

    reference = run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", crash_at=10)
    resumed = run(tmp_path / "run", resume=True)
    assert reference.keys() == resumed.keys() and any(k.startswith(("peers.", "followers.")) for k in reference)
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)


def test_black_box_teacher_scores_each_sample_once_per_run(tmp_path):
    from distil.teacher import CallableTeacher

    seen = []
    scorer = linear(5)

    def slow_scorer(x):  # e.g. a random forest's predict_proba
        seen.append(len(x))
        with torch.no_grad():
            return scorer(x)

    teacher = CallableTeacher(slow_scorer)
    distiller = Distiller(linear(0), teacher, {"kd": HintonKD(alpha=0.0)})
    cfg = TrainConfig(epochs=3, output_dir=str(tmp_path / "run"), optimizer={"lr": 1e-2})
    Trainer(distiller, data(), None, cfg, batch_size=16, progress=False).fit()
    assert sum(seen) == 96 == teacher.calls  # 96 samples, 3 epochs: each scored once
    x = data().tensors[0][:5]
    torch.testing.assert_close(teacher(x), scorer(x).detach())  # cached answers are the scorer's
    uncached = CallableTeacher(slow_scorer, cache=False)
    uncached(x), uncached(x)
    assert uncached.calls == 10


def test_distiller_names_the_term_that_went_non_finite():
    from distil.errors import NonFiniteLossError

    class Blows(nn.Module):
        def forward(self, student_logits):
            return student_logits.sum() * float("inf")

    distiller = Distiller(linear(0), None, {"ce": CrossEntropy(), "hint": Blows()})
    x, y = data(8).tensors
    with pytest.raises(NonFiniteLossError, match=r"non-finite term\(s\) hint;"):
        distiller((x, y))
