"""Student training from the vision teacher cache vs student-only training vs the live-teacher KD step.

ResNet-32x4 -> ResNet-8x4, random CIFAR-shaped images resident on the GPU, Hinton KD (T=4),
pad-4 crop + flip augmentation, bf16 autocast, channels_last. The cache holds K views per image
(`distil.cache.build_vision_cache`, teacher in bf16). Rows per batch size:

  student only   crop/flip on the GPU + CE step: the floor, as if the teacher cost nothing
  cached         `VisionTeacherCache.batch` (replayed view + stored logits) + Distiller without a
                 teacher + Hinton KD step
  live teacher   crop/flip on the GPU + Distiller with FrozenTeacher (bf16) + Hinton KD step
  cached, loader the per-sample Dataset path (`cache[i]` in DataLoader workers, pinned, copied
                 per step): what Trainer.fit does with the cache
  cached, fit    Trainer.fit on the cache (median epoch samples/s)

Also reported: build time (teacher over N x K views), open time (full verification: file hash,
teacher hash, a pass over the data), bytes per sample, and the epochs after which the build has
paid for itself against the live teacher.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from benchlib import Results, attempt, default, measure, parser, pick_device, ratio
from torch.utils.data import DataLoader, TensorDataset

from distil.cache import VisionTeacherCache, build_vision_cache, crop_flip
from distil.config import OptimizerConfig
from distil.distiller import Distiller
from distil.losses.response.hinton import HintonKD
from distil.models.cifar import resnet
from distil.optim import build_optimizer
from distil.teacher import FrozenTeacher

ROWS = ("student_only", "cached", "live", "loader", "fit")
COLUMNS = ["batch", "row", "ms_per_step", "img_per_s", "x_floor", "x_live_speedup", "status"]


class Bench:
    def __init__(self, args, device: torch.device, cache: VisionTeacherCache, data: TensorDataset, teacher):
        self.args, self.device, self.cache, self.teacher = args, device, cache, teacher
        self.cuda = device.type == "cuda"
        self.amp = torch.bfloat16 if self.cuda else None
        self.fmt = torch.channels_last if self.cuda else torch.contiguous_format
        self.images = data.tensors[0].to(device)  # (N, 3, S, S) un-augmented, resident
        self.labels = data.tensors[1].to(device)
        self.data = data

    def student(self):
        torch.manual_seed(0)
        net = resnet.resnet8x4(num_classes=self.args.num_classes).to(self.device, memory_format=self.fmt)
        if self.args.compile:
            net.compile()
        return net

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None)

    def batch_ids(self, b: int) -> torch.Tensor:
        return torch.randint(0, len(self.images), (b,), device=self.device)

    def random_views(self, idx: torch.Tensor) -> torch.Tensor:
        params = torch.cat([torch.randint(0, 9, (len(idx), 2), device=self.device),
                            torch.randint(0, 2, (len(idx), 1), device=self.device)], 1)
        return crop_flip(self.images[idx], params, 4).contiguous(memory_format=self.fmt)

    def optimizer(self, params):
        return build_optimizer(params, OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4))

    def time(self, step, b: int) -> dict:
        a = self.args
        m = measure(step, self.device, warmup=a.warmup, repeats=a.repeats, steps=a.steps)
        return {"ms_per_step": m["median_s"] * 1e3, "img_per_s": b / m["median_s"]}

    def _kd_step(self, distiller, opt, batch):
        with self.autocast():
            out = distiller(batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def student_only(self, b: int) -> dict:
        net = self.student()
        opt = self.optimizer(net.parameters())

        def step():
            idx = self.batch_ids(b)
            with self.autocast():
                loss = F.cross_entropy(net(self.random_views(idx)), self.labels[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return self.time(step, b)

    def cached(self, b: int) -> dict:
        distiller = Distiller(self.student(), None, {"kd": HintonKD(temperature=4.0, alpha=0.1)})
        opt = self.optimizer(distiller.trainable_parameters())

        def step():
            idx = self.batch_ids(b)
            x, t = self.cache.batch(self.images[idx], idx)
            self._kd_step(distiller, opt, {"inputs": x.contiguous(memory_format=self.fmt),
                                           "labels": self.labels[idx], "teacher_logits": t})

        return self.time(step, b)

    def live(self, b: int) -> dict:
        teacher = self.teacher.to(memory_format=self.fmt)
        if self.args.compile:
            teacher.compile()
        distiller = Distiller(self.student(), FrozenTeacher(teacher, autocast=self.amp),
                              {"kd": HintonKD(temperature=4.0, alpha=0.1)})
        opt = self.optimizer(distiller.trainable_parameters())

        def step():
            idx = self.batch_ids(b)
            self._kd_step(distiller, opt, (self.random_views(idx), self.labels[idx]))

        return self.time(step, b)

    def loader(self, b: int) -> dict:
        distiller = Distiller(self.student(), None, {"kd": HintonKD(temperature=4.0, alpha=0.1)})
        opt = self.optimizer(distiller.trainable_parameters())
        loader = DataLoader(self.cache, batch_size=b, shuffle=True, drop_last=True, pin_memory=self.cuda,
                            num_workers=self.args.workers, persistent_workers=self.args.workers > 0)
        batches = _forever(loader)

        def step():
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()}
            batch["inputs"] = batch["inputs"].contiguous(memory_format=self.fmt)
            self._kd_step(distiller, opt, batch)

        return self.time(step, b) | {"status": f"ok ({self.args.workers} workers)"}

    def fit(self, b: int) -> dict:
        from distil.config import ScheduleConfig, TrainConfig
        from distil.trainer import Trainer

        distiller = Distiller(self.student(), None, {"kd": HintonKD(temperature=4.0, alpha=0.1)})
        with tempfile.TemporaryDirectory() as tmp:
            wanted = dict(output_dir=tmp, epochs=self.args.fit_epochs, seed=0, schedule=ScheduleConfig(name="constant"),
                          optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
                          mixed_precision="bf16" if self.cuda else "no", cpu=not self.cuda,
                          channels_last=self.cuda)
            cfg = TrainConfig(**{k: v for k, v in wanted.items() if k in TrainConfig.model_fields})
            trainer = Trainer(distiller, self.cache, None, cfg, batch_size=b, num_workers=self.args.workers,
                              num_classes=self.args.num_classes, progress=False, name="bench")
            history = trainer.fit().history
        speeds = sorted(h["train/samples_per_s"] for h in (history[1:] or history))
        ips = speeds[len(speeds) // 2]
        return {"ms_per_step": b / ips * 1e3, "img_per_s": ips, "status": f"ok ({self.args.workers} workers)"}

    def check(self) -> dict:
        """Cached logits vs the live teacher on the replayed views (teacher precision as cached)."""
        idx = torch.arange(min(64, len(self.images)), device=self.device)
        x, cached = self.cache.batch(self.images[idx], idx)
        with torch.no_grad(), self.autocast():
            live = self.teacher.eval()(x.contiguous(memory_format=self.fmt)).float()
        diff = (live - cached).abs().max().item()
        scale = live.abs().max().item()
        if diff > 0.02 * scale + 0.02:
            raise AssertionError(f"cached logits differ from the live teacher by {diff:.3g} (max |logit| {scale:.3g})")
        return {"status": f"ok: cached == live teacher on the replayed views (max abs diff {diff:.2g})"}


def _forever(loader):
    while True:
        yield from loader


def parse(argv: list[str] | None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, help="images in the cached data set")
    p.add_argument("--views", type=int, help="K, stored views per image")
    p.add_argument("--batch-sizes", nargs="+", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--workers", type=int, help="DataLoader workers of the loader and fit rows")
    p.add_argument("--fit-epochs", type=int)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    args = p.parse_args(argv)
    for name, smoke, full in (("samples", 32, 8192), ("views", 2, 8), ("batch_sizes", [8], [64, 256]),
                              ("image_size", 8, 32), ("workers", 0, 8), ("fit_epochs", 1, 2),
                              ("warmup", 1, 10), ("repeats", 1, 5), ("steps", 1, 20)):
        setattr(args, name, default(args, name, smoke, full))
    return args


def build(args, device: torch.device, data: TensorDataset, teacher, folder: Path, res: Results):
    """Build the cache (timed), reopen it with full verification (timed), record both."""
    t0 = time.perf_counter()
    build_vision_cache(teacher, data, folder, num_views=args.views, device=device, batch_size=512,
                       autocast=torch.bfloat16 if device.type == "cuda" else None)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cache = VisionTeacherCache(folder, data, teacher, num_views=args.views)
    open_s = time.perf_counter() - t0
    res.note(f"cache: {args.samples} images x {args.views} views; build {build_s:.2f} s, open (verified) "
             f"{open_s:.2f} s, {cache.bytes_per_sample():.0f} bytes per image")
    res.data["cache"] = {"build_s": build_s, "open_s": open_s, "bytes_per_sample": cache.bytes_per_sample()}
    return cache, build_s


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    device = pick_device(args)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.set_flush_denormal(True)
    res = Results("cached_teacher", args, device, COLUMNS, "KD from the vision teacher cache, ResNet-32x4 -> ResNet-8x4")
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(args.samples, 3, args.image_size, args.image_size, generator=gen),
                         torch.randint(0, args.num_classes, (args.samples,), generator=gen))
    torch.manual_seed(1)
    teacher = resnet.resnet32x4(num_classes=args.num_classes).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        cache, build_s = build(args, device, data, teacher, Path(tmp), res)
        bench = Bench(args, device, cache, data, teacher)
        res.add(attempt(bench.check, {"batch": "-", "row": "check"}))
        for b in args.batch_sizes:
            rows = {name: attempt(lambda: getattr(bench, name)(b), {"batch": b, "row": name.replace("_", " ")})
                    for name in args.rows}
            floor, live = rows.get("student_only", {}), rows.get("live", {})
            for row in rows.values():
                row["x_floor"] = ratio(row.get("ms_per_step"), floor.get("ms_per_step"))
                row["x_live_speedup"] = ratio(live.get("ms_per_step"), row.get("ms_per_step"))
                res.add(row)
            if "ms_per_step" in live and "ms_per_step" in rows.get("cached", {}):
                saved = (live["ms_per_step"] - rows["cached"]["ms_per_step"]) / 1e3 * args.samples / b  # s per epoch
                res.note(f"batch {b}: the build pays for itself after {build_s / saved:.2f} epochs" if saved > 0
                         else f"batch {b}: the cache is not faster than the live teacher here")
    res.note("x_floor = time per step / student-only time; x_live_speedup = live-teacher time / row time")
    return res.finish()


if __name__ == "__main__":
    main()
