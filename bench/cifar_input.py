"""The CIFAR input pipeline alone: batches per second of the per-sample DataLoader path vs the
batched path the Trainer now takes (images decoded once, kept on the device, cropped and flipped
there per batch).

Data: the shared JPEG CIFAR-10 (`../shared/data/cifar10_jpeg`, 45,000 training images after the
validation split), pad-4 crop + flip, normalised, batch 256, shuffled by the Trainer's sampler;
`--smoke` uses 512 random images from a generated .npz. Rows: `dataloader, N workers` (what
`Trainer` did for CIFAR before: decode + augment every image every epoch), `batched` (one decode,
then per-batch work on the device; the one-off decode is reported separately). Baseline of the
ratio: the DataLoader row with 0 workers.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import Results, attempt, parser, pick_device, ratio, sync
from torch.utils.data import DataLoader

from distil.data.cifar import cifar10_jpeg, cifar_npz
from distil.trainer import EpochBatchSampler, TensorBatches

COLUMNS = ["row", "epochs", "img_per_s", "x_dataloader", "setup_s", "status"]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpeg"


def train_split(smoke: bool):
    if not smoke:
        if not SHARED.is_dir():
            raise SystemExit(f"{SHARED} not found: the full run needs the shared JPEG CIFAR-10 (or use --smoke)")
        return cifar10_jpeg(SHARED).train
    rng = np.random.default_rng(0)
    path = Path(tempfile.mkdtemp()) / "tiny.npz"
    x = rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(512) % 10, x_test=x[:8], y_test=np.arange(8))
    return cifar_npz(path, val_fraction=0).train


def run_epochs(batches, data, sampler, epochs: int, device) -> float:
    """Images per second over `epochs` passes, each batch moved to `device` as the Trainer would."""
    seen, start = 0, time.perf_counter()
    for epoch in range(epochs):
        sampler.epoch = epoch
        data.set_epoch(epoch)
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    epochs = args.epochs or (1 if args.smoke else 2)
    device = pick_device(args)
    data = train_split(args.smoke)
    res = Results("cifar_input", args, device, COLUMNS, f"CIFAR input pipeline, {len(data)} images, batch {args.batch_size}")
    sampler = EpochBatchSampler(len(data), args.batch_size, seed=0)
    for workers in args.workers:
        def loader_row(workers=workers):
            loader = DataLoader(data, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
                                generator=torch.Generator().manual_seed(0))
            return {"img_per_s": run_epochs(loader, data, sampler, epochs, device), "setup_s": 0.0}
        res.add(attempt(loader_row, {"row": f"dataloader, {workers} workers", "epochs": epochs}))

    def batched_row():
        t0 = time.perf_counter()
        batches = TensorBatches.of(data, sampler, device if device.type == "cuda" else None)
        sync(device)
        setup = time.perf_counter() - t0
        return {"img_per_s": run_epochs(batches, data, sampler, epochs, device), "setup_s": setup}
    res.add(attempt(batched_row, {"row": "batched (distil Trainer)", "epochs": epochs}))
    base = res.rows[0].get("img_per_s")
    for row in res.rows:
        row["x_dataloader"] = ratio(row.get("img_per_s"), base)
    res.note("x_dataloader = images/s over the 0-worker DataLoader's; setup_s = the batched path's one-off "
             "decode (and copy to the device), not counted in its images/s")
    return res.finish()


if __name__ == "__main__":
    main()
