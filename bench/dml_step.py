"""One deep-mutual-learning training step with two peers vs two independent student steps.

A DML step (Zhang et al. 2018, simultaneous form) runs both peers forward, adds each peer's
cross-entropy and KL to the other's (detached) prediction, and takes one backward and one
optimizer step over both. Its floor is what two separate runs would spend on the same batch: one
plain cross-entropy step of each peer, measured alone and summed. Rows: the Distiller's step (the
Trainer's path: `Distiller.forward` + backward + AdamW step) and the floor; peers are ResNet-20s
at CIFAR size, or small MLPs with --small. Target: <= 1.1x the floor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from benchlib import Results, attempt, default, measure, parser, pick_device, ratio

from distil.distiller import Distiller, Term
from distil.losses import MutualKD
from distil.models import MODELS
from distil.roles import Peer

COLUMNS = ["model", "batch", "row", "ms_per_step", "x_floor", "status"]


def peers(small: bool, device):
    torch.manual_seed(0)
    if small:
        make = lambda: MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[256, 256])  # noqa: E731
        return make().to(device), make().to(device), (64,)
    make = lambda: MODELS.get("resnet20")(num_classes=10)  # noqa: E731
    return make().to(device), make().to(device), (3, 32, 32)


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="MLP peers on 8x8 digit-sized inputs")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    args = p.parse_args(argv)
    args.warmup, args.repeats, args.steps = (default(args, n, s, f) for n, s, f in
                                             (("warmup", 1, 5), ("repeats", 1, 5), ("steps", 2, 20)))
    device = pick_device(args)
    small = args.small or args.smoke
    batches = args.batch_sizes or ([8] if args.smoke else [64, 256])
    res = Results("dml_step", args, device, COLUMNS, "DML, 2 peers: one step vs two independent CE steps")
    for batch in batches:
        a, b, shape = peers(small, device)
        x = torch.randn(batch, *shape, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        distiller = Distiller(a, None, {"a": Term(MutualKD(), teacher="peer"),
                                        "b": Term(MutualKD(), student="peer", teacher="student")},
                              models={"peer": Peer(b)}).train()
        distiller.check_finite = False  # as in the Trainer, which checks on its own cadence
        opt = torch.optim.AdamW(distiller.trainable_parameters(), lr=1e-3)
        alone = {m: torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (a, b)}

        def dml_step():
            distiller((x, y))["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def plain_step(model):
            F.cross_entropy(model(x), y).backward()
            alone[model].step()
            alone[model].zero_grad(set_to_none=True)

        name = "mlp 256x2" if small else "resnet20"
        timed = {}
        for row, step in (("peer A alone", lambda: plain_step(a)), ("peer B alone", lambda: plain_step(b)),
                          ("distil DML step", dml_step)):
            base = {"model": name, "batch": batch, "row": row}
            timed[row] = res.add(attempt(lambda step=step: {"ms_per_step": 1e3 * measure(
                step, device, warmup=args.warmup, repeats=args.repeats, steps=args.steps)["median_s"]}, base))
        parts = [timed[r].get("ms_per_step") for r in ("peer A alone", "peer B alone")]
        floor = sum(parts) if None not in parts else None
        res.add({"model": name, "batch": batch, "row": "floor (A + B)", "ms_per_step": floor, "status": "ok"})
        timed["distil DML step"]["x_floor"] = ratio(timed["distil DML step"].get("ms_per_step"), floor)
    res.note("x_floor = DML step time / (peer A's CE step + peer B's CE step), same process; target <= 1.1")
    return res.finish()


if __name__ == "__main__":
    main()
