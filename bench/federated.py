"""Federated distillation (FedDF) against FedAvg, the average client and pooled training, over seeds.

For each seed, `recipes/schemes/<data>_feddf.yaml` runs twice: as written (FedDF: each round the
clients' weight average, then distilled from their ensemble on the unlabelled public share) into
`<runs>/s<seed>`, and with `federated.fuse: average` (FedAvg alone, same clients, shards and
rounds) into `<runs>/s<seed>_fedavg`. Reports test accuracy (mean +- std, each seed's) of the
global models, the mean of the last round's clients, their ensemble (FedDF's teacher) and the
same network trained on all the clients' data pooled (the recipe's baseline).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from benchlib import Results, parser, run_metrics

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = ["data", "model", "accuracy", "std", "per_seed", "vs_fedavg", "seeds", "status"]


def one_seed(data: str, seed: int, runs: Path, overrides: list[str], progress: bool) -> dict[str, float]:
    recipe = ROOT / "recipes" / "schemes" / f"{data}_feddf.yaml"
    feddf = run_metrics(recipe, runs / f"s{seed}", [f"seed={seed}", *overrides], progress)
    fedavg = run_metrics(recipe, runs / f"s{seed}_fedavg", [f"seed={seed}", *overrides, "federated.fuse=average",
                                                       "baseline=false"], progress)
    return {"fedavg": fedavg["distilled"]["accuracy"], "feddf": feddf["distilled"]["accuracy"],
            "client_mean": feddf["client_mean"]["accuracy"], "clients_ensemble": feddf["teacher"]["accuracy"],
            "pooled": feddf["baseline"]["accuracy"]}


def main(argv: list[str] | None = None) -> dict:
    p = parser("FedDF against FedAvg, the average client and pooled training")
    p.add_argument("--data", choices=["digits", "mnist"], default="digits")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", type=Path, default=None, help="run folders (default runs/federated_<data>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override, as distil run --set")
    args = p.parse_args(argv)
    runs = args.runs or ROOT / "runs" / f"federated_{args.data}"
    if args.smoke:
        args.overrides = ["federated.rounds=1", "federated.local_epochs=1", "epochs=1", "max_steps=2", *args.overrides]
    res = Results(f"federated_{args.data}", args, torch.device("cpu"), COLUMNS,
                  "test accuracy (%) of the global model and its references, mean +- std over seeds")
    per_seed = [one_seed(args.data, s, runs, args.overrides, not args.smoke) for s in args.seeds]
    for row in ["fedavg", "feddf", "client_mean", "clients_ensemble", "pooled"]:
        acc = [100 * m[row] for m in per_seed]
        res.add({"data": args.data, "model": row, "accuracy": statistics.mean(acc),
                 "std": statistics.stdev(acc) if len(acc) > 1 else 0.0, "per_seed": " ".join(f"{a:.2f}" for a in acc),
                 "vs_fedavg": statistics.mean(100 * (m[row] - m["fedavg"]) for m in per_seed),
                 "seeds": " ".join(map(str, args.seeds)), "status": "ok"})
    res.note("vs_fedavg: points over FedAvg alone with the same seed, clients and rounds; client_mean and "
             "clients_ensemble: the last round of the FedDF run; pooled: one network on all the clients' data")
    return res.finish()


if __name__ == "__main__":
    main()
