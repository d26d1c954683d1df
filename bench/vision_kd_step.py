"""Images/s of one CIFAR KD training step: distil against a tutorial loop, torchdistill and the floor.

Pairs: ResNet-32x4 -> ResNet-8x4 and ResNet-56 -> ResNet-20 (Tian et al., CRD, ICLR 2020), random
CIFAR-shaped data, 100 classes, SGD; losses Hinton KD (T=4, alpha=0.1) and CE + attention transfer
on layer1-3 (beta=1000). Rows per (pair, batch size, loss):

  distil step   Distiller + FrozenTeacher, bf16 autocast, channels_last, data resident on the GPU,
                optional torch.compile of student and teacher (--compile), no host syncs
  distil fit    distil's Trainer.fit as users run it (same settings), median epoch samples/s
  tutorial      the usual hand-written loop: DataLoader over CPU tensors, fp32 teacher forward,
                fp32 student, .item() every step
  torchdistill  torchdistill's KDLoss/ATLoss in the `distil step` loop, when it is importable
  floor         student fwd+bwd+SGD step alone (CE) + teacher forward alone, each timed on its own
                with the fastest settings (bf16, channels_last, fused SGD, inference_mode,
                --compile when given), then summed: no KD implementation can beat it

`x floor` is the row's time per step over the floor's (1.00 = as fast as the floor). Before timing,
each pair and loss is checked: distil's loss equals the tutorial's (and torchdistill's) in fp32.
"""

from __future__ import annotations

import itertools
import tempfile

import torch
import torch.nn.functional as F
from benchlib import Results, attempt, default, measure, parser, pick_device, ratio
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from distil.config import OptimizerConfig
from distil.distiller import Distiller, Term
from distil.losses.feature.attention_transfer import AttentionTransfer
from distil.losses.response.hard import CrossEntropy
from distil.losses.response.hinton import HintonKD
from distil.models.cifar import resnet
from distil.optim import build_optimizer
from distil.teacher import FrozenTeacher

PAIRS = {"resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4"), "resnet56-resnet20": ("resnet56", "resnet20")}
LOSSES = ("hinton_kd", "attention_transfer")
ROWS = ("distil_step", "distil_fit", "tutorial", "torchdistill", "floor")
LAYERS = ["layer1", "layer2", "layer3"]
T, ALPHA, BETA, LR = 4.0, 0.1, 1000.0, 0.05
COLUMNS = ["pair", "batch", "loss", "row", "ms_per_step", "img_per_s", "x_floor", "status"]


class Setup:
    """One (pair, batch size): seeded models, random data on the CPU and resident on the device."""

    def __init__(self, args, device: torch.device, pair: str, batch: int):
        self.args, self.device, self.pair, self.batch = args, device, pair, batch
        self.cuda = device.type == "cuda"
        self.amp = torch.bfloat16 if self.cuda else None
        self.fmt = torch.channels_last if self.cuda else torch.contiguous_format
        n = batch * args.trainer_steps
        gen = torch.Generator().manual_seed(0)
        self.cpu_x = torch.randn(n, 3, args.image_size, args.image_size, generator=gen)
        self.cpu_y = torch.randint(0, args.num_classes, (n,), generator=gen)
        nb = min(args.resident_batches, args.trainer_steps)
        self.x = [self.cpu_x[i * batch:(i + 1) * batch].to(device).contiguous(memory_format=self.fmt) for i in range(nb)]
        self.y = [self.cpu_y[i * batch:(i + 1) * batch].to(device) for i in range(nb)]
        self.counter = itertools.count()

    def models(self, fast: bool = True) -> tuple[nn.Module, nn.Module]:
        """Fresh (teacher, student) with the same initial weights every call."""
        names = PAIRS[self.pair]
        torch.manual_seed(0)
        teacher = getattr(resnet, names[0])(num_classes=self.args.num_classes).to(self.device)
        student = getattr(resnet, names[1])(num_classes=self.args.num_classes).to(self.device)
        if fast:
            teacher, student = teacher.to(memory_format=self.fmt), student.to(memory_format=self.fmt)
        return teacher, student

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        i = next(self.counter) % len(self.x)
        return self.x[i], self.y[i]

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None)

    def time(self, step) -> dict:
        a = self.args
        m = measure(step, self.device, warmup=a.warmup, repeats=a.repeats, steps=a.steps)
        return {"ms_per_step": m["median_s"] * 1e3, "img_per_s": self.batch / m["median_s"]}


def distil_losses(loss: str) -> dict:
    if loss == "hinton_kd":
        return {"kd": HintonKD(temperature=T, alpha=ALPHA)}
    return {"ce": CrossEntropy(), "at": Term(AttentionTransfer(beta=BETA), student_layers=LAYERS, teacher_layers=LAYERS)}


def sgd_config() -> OptimizerConfig:
    return OptimizerConfig(name="sgd", lr=LR, momentum=0.9, weight_decay=5e-4)


def distil_step_row(s: Setup, loss: str) -> dict:
    teacher, student = s.models()
    distiller = Distiller(student, FrozenTeacher(teacher, autocast=s.amp), distil_losses(loss)).to(s.device)
    if s.args.compile:
        student.compile()
        teacher.compile()
    opt = build_optimizer(distiller.trainable_parameters(), sgd_config())

    def step():
        x, y = s.next()
        with s.autocast():
            out = distiller((x, y))
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return s.time(step)


def distil_fit_row(s: Setup, loss: str) -> dict:
    from distil.config import ScheduleConfig, TrainConfig
    from distil.trainer import Trainer

    teacher, student = s.models(fast=False)
    distiller = Distiller(student, FrozenTeacher(teacher), distil_losses(loss))
    with tempfile.TemporaryDirectory() as tmp:
        wanted = dict(output_dir=tmp, epochs=s.args.trainer_epochs, optimizer=sgd_config(), seed=0,
                      schedule=ScheduleConfig(name="constant"), mixed_precision="bf16" if s.cuda else "no",
                      cpu=not s.cuda, channels_last=s.cuda, compile=s.args.compile)
        missing = sorted(k for k in wanted if k not in TrainConfig.model_fields)
        cfg = TrainConfig(**{k: v for k, v in wanted.items() if k in TrainConfig.model_fields})
        trainer = Trainer(distiller, TensorDataset(s.cpu_x, s.cpu_y), None, cfg, batch_size=s.batch,
                          num_classes=s.args.num_classes, progress=False, name="bench")
        history = trainer.fit().history
        distiller.close()
    speeds = sorted(h["train/samples_per_s"] for h in (history[1:] or history))
    ips = speeds[len(speeds) // 2]
    row = {"ms_per_step": s.batch / ips * 1e3, "img_per_s": ips}
    return row | ({"status": f"ok (TrainConfig lacks {', '.join(missing)})"} if missing else {})


def at_map(f: torch.Tensor) -> torch.Tensor:
    return F.normalize(f.float().pow(2).mean(1).flatten(1), dim=1)


def tutorial_loss(loss: str, s_out, t_out, y, s_feats=None, t_feats=None) -> torch.Tensor:
    """The loss as tutorials write it (KLDivLoss on softened outputs; AT from hooked features)."""
    if loss == "hinton_kd":
        soft = F.kl_div(F.log_softmax(s_out / T, dim=1), F.softmax(t_out / T, dim=1), reduction="batchmean")
        return ALPHA * F.cross_entropy(s_out, y) + (1 - ALPHA) * T * T * soft
    at = sum((at_map(a) - at_map(b)).pow(2).mean() for a, b in zip(s_feats, t_feats))
    return F.cross_entropy(s_out, y) + BETA / 2 * at


def hook_features(model: nn.Module) -> list:
    feats: list = []
    for name in LAYERS:
        getattr(model, name).register_forward_hook(lambda _m, _i, out: feats.append(out))
    return feats


def forever(loader):
    while True:
        yield from loader


def tutorial_row(s: Setup, loss: str) -> dict:
    teacher, student = s.models(fast=False)
    teacher.eval()
    s_feats, t_feats = (hook_features(student), hook_features(teacher)) if loss != "hinton_kd" else ([], [])
    loader = forever(DataLoader(TensorDataset(s.cpu_x, s.cpu_y), batch_size=s.batch, shuffle=True, drop_last=True))
    opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    running = []

    def step():
        x, y = next(loader)
        x, y = x.to(s.device), y.to(s.device)
        with torch.no_grad():
            t_out = teacher(x)
        s_out = student(x)
        value = tutorial_loss(loss, s_out, t_out, y, s_feats, t_feats)
        s_feats.clear()
        t_feats.clear()
        opt.zero_grad()
        value.backward()
        opt.step()
        running.append(value.item())

    return s.time(step)


def torchdistill_losses(loss: str):
    """torchdistill's own loss modules (mid-level API: io dicts of module outputs)."""
    from torchdistill.losses.mid_level import ATLoss, KDLoss

    if loss == "hinton_kd":
        return KDLoss(".", "output", ".", "output", temperature=T, alpha=ALPHA), None
    pairs = {n: {"student": {"io": "output", "path": n}, "teacher": {"io": "output", "path": n}, "weight": BETA / 2}
             for n in LAYERS}
    return ATLoss(pairs, mode="code"), nn.CrossEntropyLoss()


def io_dict(logits, feats) -> dict:
    return {".": {"output": logits}} | {n: {"output": f} for n, f in zip(LAYERS, feats)}


def torchdistill_loss(loss: str, crit, ce, s_out, t_out, y, s_feats, t_feats) -> torch.Tensor:
    s_io, t_io = io_dict(s_out, s_feats), io_dict(t_out, t_feats)
    value = crit(s_io, t_io, y)
    return value if ce is None else value + ce(s_out, y)


def torchdistill_row(s: Setup, loss: str) -> dict:
    try:
        import torchdistill
    except ImportError:
        return {"status": "not installed"}
    crit, ce = torchdistill_losses(loss)
    teacher, student = s.models()
    teacher.eval()
    s_feats, t_feats = (hook_features(student), hook_features(teacher)) if loss != "hinton_kd" else ([], [])
    if s.args.compile:
        student.compile()
        teacher.compile()
    opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)

    def step():
        x, y = s.next()
        with s.autocast():
            with torch.no_grad():
                t_out = teacher(x)
            value = torchdistill_loss(loss, crit, ce, student(x), t_out.float(), y, s_feats, t_feats)
        s_feats.clear()
        t_feats.clear()
        value.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return s.time(step) | {"status": f"ok (torchdistill {getattr(torchdistill, '__version__', '?')})"}


def floor_rows(s: Setup) -> tuple[dict, dict]:
    teacher, student = s.models()
    teacher.eval()
    if s.args.compile:
        student.compile()
        teacher.compile()
    try:  # the fastest optimizer step torch has; older builds lack fused SGD
        opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4, fused=s.cuda)
    except (TypeError, RuntimeError):
        opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)

    def student_step():
        x, y = s.next()
        with s.autocast():
            value = F.cross_entropy(student(x), y)
        value.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def teacher_forward():
        x, _ = s.next()
        with torch.inference_mode(), s.autocast():
            teacher(x)

    return s.time(student_step), s.time(teacher_forward)


def check(s: Setup, loss: str) -> dict:
    """distil's loss == the tutorial's (== torchdistill's) on one batch, fp32, same weights."""
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # full fp32 convolutions: a real difference cannot hide
    try:
        return _check(s, loss)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def _check(s: Setup, loss: str) -> dict:
    x, y = s.cpu_x[: s.batch].to(s.device), s.cpu_y[: s.batch].to(s.device)
    teacher, student = s.models(fast=False)
    teacher.eval()
    distiller = Distiller(student, FrozenTeacher(teacher), distil_losses(loss))
    ours = distiller((x, y))["loss"].item()
    distiller.close()
    teacher, student = s.models(fast=False)
    teacher.eval()
    s_feats, t_feats = (hook_features(student), hook_features(teacher)) if loss != "hinton_kd" else ([], [])
    with torch.no_grad():
        t_out = teacher(x)
        s_out = student(x)
        theirs = {"tutorial": tutorial_loss(loss, s_out, t_out, y, s_feats, t_feats).item()}
        try:
            crit, ce = torchdistill_losses(loss)
            theirs["torchdistill"] = torchdistill_loss(loss, crit, ce, s_out, t_out, y, s_feats, t_feats).item()
        except ImportError:
            pass
    diff = max(abs(ours - v) / max(abs(v), 1e-12) for v in theirs.values())
    tol = 1e-3 if s.cuda else 1e-4  # cuDNN may pick different fp32 algorithms for the two copies
    if diff > tol:
        raise AssertionError(f"{loss}: distil loss {ours} differs from {theirs} (relative {diff:.2e})")
    return {"status": f"ok: same loss as {', '.join(theirs)} (rel. diff {diff:.1e})"}


def parse(argv: list[str] | None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", choices=list(PAIRS))
    p.add_argument("--batch-sizes", nargs="+", type=int)
    p.add_argument("--losses", nargs="+", choices=LOSSES)
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--compile", action="store_true", help="torch.compile student and teacher (distil rows, floor)")
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--image-size", type=int)
    p.add_argument("--trainer-steps", type=int, help="batches per epoch of the Trainer.fit row")
    p.add_argument("--trainer-epochs", type=int)
    p.add_argument("--resident-batches", type=int, default=8)
    args = p.parse_args(argv)
    for name, smoke, full in (("pairs", list(PAIRS), list(PAIRS)), ("batch_sizes", [4], [64, 256]),
                              ("losses", list(LOSSES), list(LOSSES)), ("image_size", 8, 32),
                              ("trainer_steps", 2, 40), ("trainer_epochs", 1, 3),
                              ("warmup", 1, 10), ("repeats", 1, 5), ("steps", 1, 20)):
        setattr(args, name, default(args, name, smoke, full))
    return args


def floor_row(res: Results, s: Setup, base: dict) -> dict:
    """Time the floor's two parts, add the three floor rows; returns the summed row ({} if it failed)."""
    parts = attempt(lambda: dict(zip(("student", "teacher"), floor_rows(s))), base)
    if "student" not in parts:
        res.add(parts | {"loss": "-", "row": "floor (sum)"})
        return {}
    st, tf = parts["student"], parts["teacher"]
    ms = st["ms_per_step"] + tf["ms_per_step"]
    floor = res.add(base | {"loss": "-", "row": "floor (sum)", "ms_per_step": ms, "img_per_s": s.batch / ms * 1e3,
                            "x_floor": 1.0, "status": "ok"})
    res.add(base | {"loss": "-", "row": "floor: student step", **st, "status": "ok"})
    res.add(base | {"loss": "-", "row": "floor: teacher fwd", **tf, "status": "ok"})
    return floor


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    device = pick_device(args)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.set_flush_denormal(True)  # random-data training drifts into denormals, which crawl on CPUs
    res = Results("vision_kd_step", args, device, COLUMNS, "KD training step throughput, random CIFAR-shaped data")
    runners = {"distil_step": distil_step_row, "distil_fit": distil_fit_row, "tutorial": tutorial_row,
               "torchdistill": torchdistill_row}
    for pair, batch in itertools.product(args.pairs, args.batch_sizes):
        s = Setup(args, device, pair, batch)
        base = {"pair": pair, "batch": batch}
        floor = floor_row(res, s, base) if "floor" in args.rows else {}
        for loss in args.losses:
            if batch == args.batch_sizes[0]:
                res.add(attempt(lambda: check(s, loss), base | {"loss": loss, "row": "check"}))
            for row in (r for r in args.rows if r != "floor"):
                out = attempt(lambda: runners[row](s, loss), base | {"loss": loss, "row": row.replace("_", " ")})
                out["x_floor"] = ratio(out.get("ms_per_step"), floor.get("ms_per_step"))
                res.add(out)
        s = None  # frees the resident data before the next setup allocates its own
        if device.type == "cuda":
            torch.cuda.empty_cache()
    res.note("x_floor = time per step / floor time per step; floor = student step alone + teacher forward alone")
    if args.compile:
        res.note("--compile: torch.compile (default mode) of student and teacher in distil rows and the floor")
    return res.finish()


if __name__ == "__main__":
    main()
