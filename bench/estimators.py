"""Students that are not networks: scikit-learn estimators fitted to a neural teacher's soft targets.

For each estimator (a depth-limited decision tree, logistic regression, gradient-boosted trees)
and seed: the estimator fitted on the gold labels of the training split (the baseline, measured in
the same run), and the same estimator fitted by `distil.estimators.fit_estimator` to the teacher's
soft targets on a transfer set: the training images plus `--copies` shifted copies of each (up
to 1 pixel, `distil.data.jitter`), all labelled by the teacher. Teacher: an MLP trained by distil
on the same training split. Data: digits (bundled) and MNIST (../shared/data, when present; a
random `--mnist-train` subset, since tree fitting time grows with the transfer set). Reports test
accuracy, agreement and KL to the teacher, size, and each run's metrics.json for `distil report`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
from benchlib import Results, parser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from distil.config import TrainConfig  # noqa: E402
from distil.data import DATASETS  # noqa: E402
from distil.data.jitter import shift_images  # noqa: E402
from distil.distiller import Distiller  # noqa: E402
from distil.estimators import fit_estimator, make_estimator  # noqa: E402
from distil.evaluate import classification_metrics, count_params, size_bytes  # noqa: E402
from distil.losses import CrossEntropy  # noqa: E402
from distil.models import MODELS  # noqa: E402
from distil.trainer import Trainer  # noqa: E402

COLUMNS = ["data", "estimator", "fit", "accuracy", "std", "gain", "agreement", "kl", "params", "size_kb", "fit_s", "status"]
ESTIMATORS = {
    "decision_tree": {"max_depth": 10},
    "logistic_regression": {"max_iter": 300},
    "gradient_boosting": {"max_iter": 50, "early_stopping": False},
}


def teacher_for(bundle, shape, out: Path, epochs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    net = MODELS.get("mlp")(input_shape=list(shape), num_classes=10, hidden=[512, 512], dropout=0.2)
    cfg = TrainConfig(epochs=epochs, output_dir=str(out), optimizer={"lr": 1e-3}, seed=0)
    Trainer(Distiller(net, None, {"ce": CrossEntropy()}), bundle.train, bundle.val, cfg, batch_size=128,
            progress=False).fit()
    return net.eval()


def transfer_set(x: torch.Tensor, image: tuple[int, int, int], copies: int, seed: int) -> torch.Tensor:
    """The inputs plus `copies` randomly shifted copies of each (1 pixel at most)."""
    g = torch.Generator().manual_seed(seed)
    views = [x]
    for _ in range(copies):
        shifts = torch.randint(-1, 2, (len(x), 2), generator=g)
        views.append(shift_images(x.reshape(-1, *image), shifts, 1).reshape(x.shape))
    return torch.cat(views)


@torch.no_grad()
def logits_of(model, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(x[i:i + 2048]) for i in range(0, len(x), 2048)])


def one_data_set(res: Results, name: str, bundle, image, args) -> None:
    xtr, ytr = bundle.train.tensors
    xte, yte = bundle.test.tensors
    teacher = teacher_for(bundle, bundle.input_shape, args.runs / name / "teacher", args.teacher_epochs)
    teacher_test = logits_of(teacher, xte)
    res.add({"data": name, "estimator": "teacher (MLP 512x512)", "fit": "labels",
             **_scores(teacher_test, yte, teacher_test), "params": count_params(teacher),
             "size_kb": size_bytes(teacher) / 1024, "status": "ok"})
    teacher_row = {"accuracy": res.rows[-1]["accuracy"] / 100, "agreement": 1.0, "kl": 0.0,
                   "params": count_params(teacher), "size_bytes": size_bytes(teacher)}
    for est_name, params in ESTIMATORS.items():
        runs: dict[str, list[dict]] = {"labels": [], "teacher soft labels": []}
        for seed in args.seeds:
            transfer = transfer_set(xtr, image, args.copies, seed)
            soft = logits_of(teacher, transfer).numpy()
            report = {"teacher": teacher_row}  # a run folder `distil report` reads
            for fit in runs:
                estimator = make_estimator(est_name, params | {"random_state": seed})
                start = time.perf_counter()
                if fit == "labels":
                    student = fit_estimator(estimator, xtr.numpy(), method="hard", labels=ytr.numpy())
                else:
                    student = fit_estimator(estimator, transfer.numpy(), soft, method="soft_labels",
                                            temperature=args.temperature)
                seconds = time.perf_counter() - start
                scores = _scores(student(xte), yte, teacher_test)
                runs[fit].append(scores | {"params": count_params(student), "size_kb": size_bytes(student) / 1024,
                                           "fit_s": seconds})
                report["baseline" if fit == "labels" else "distilled"] = {
                    "accuracy": scores["accuracy"] / 100, "agreement": scores["agreement"] / 100, "kl": scores["kl"],
                    "params": count_params(student), "size_bytes": size_bytes(student)}
            folder = args.runs / name.split()[0] / f"{est_name}-seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps(report, indent=2))
        base = statistics.mean(r["accuracy"] for r in runs["labels"])
        for fit, rows in runs.items():
            acc = [r["accuracy"] for r in rows]
            res.add({"data": name, "estimator": est_name, "fit": fit, "accuracy": statistics.mean(acc),
                     "std": statistics.stdev(acc) if len(acc) > 1 else None,
                     "gain": None if fit == "labels" else statistics.mean(acc) - base,
                     **{k: statistics.mean(r[k] for r in rows) for k in ("agreement", "kl", "params", "size_kb", "fit_s")},
                     "status": "ok"})


def _scores(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor) -> dict:
    m = classification_metrics(logits, labels, teacher)
    return {"accuracy": 100 * m["accuracy"], "agreement": 100 * m["agreement"], "kl": m["kl"]}


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--copies", type=int, default=4, help="shifted copies of each training image in the transfer set")
    p.add_argument("--temperature", type=float, default=2.0, help="softens the teacher's targets")
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--mnist-train", type=int, default=10000)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_estimators")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.copies, args.teacher_epochs = args.seeds[:1], 1, 2
    res = Results("estimators", args, torch.device("cpu"), COLUMNS,
                  "scikit-learn students: fitted to gold labels vs to a teacher's soft labels on a transfer set")
    one_data_set(res, "digits", DATASETS.get("digits")(), (1, 8, 8), args)
    mnist = ROOT.parent / "shared" / "data" / "mnist"
    if mnist.is_dir() and not args.smoke:
        bundle = DATASETS.get("mnist")(root=str(mnist), max_train=args.mnist_train)
        one_data_set(res, f"mnist ({args.mnist_train} train)", bundle, (1, 28, 28), args)
    res.note("gain: mean accuracy (points) of the soft-label fit minus the same estimator fitted to the gold labels "
             "of the training split, same seeds; soft labels are the teacher's at temperature "
             f"{args.temperature} on the training images plus {args.copies} shifted copies of each")
    return res.finish()


if __name__ == "__main__":
    main()
