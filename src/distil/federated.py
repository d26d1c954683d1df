"""Federated distillation: clients train on their own data, the server fuses them by distillation.

FedDF (Lin et al., "Ensemble Distillation for Robust Model Fusion in Federated Learning",
NeurIPS 2020). Each round, every client starts from the global model and trains on its own
labelled shard; the server averages their weights (FedAvg, McMahan et al. 2017) as its starting
point, then distils the clients' ensemble (their averaged logits, FedDF's AVGLOGITS) into it on
unlabelled public data. The result is the next round's global model. Non-IID shards follow Hsu et
al. (2019): each class is split over the clients in Dirichlet(alpha) proportions.

Simulated in one process, every client and server step through the one Trainer; each is a stage
folder under `<output_dir>/federated/round-<r>/` with its own checkpoints, so `--resume` continues
mid-round. Conventions that differ from the authors' code: the public data is a held-out, unlabelled
share of the run's own training split (`public_share`) rather than another data set; clients keep
their last weights (they have no validation data); the server keeps its best epoch by the run's
validation split, as the pooled baseline does.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from distil.build import build_losses, build_model
from distil.checkpoint import atomic_write_text, load_weights, save_weights
from distil.config import LossConfig, Recipe
from distil.console import phase
from distil.batch import split_batch
from distil.data import DataBundle
from distil.data.base import TrainSubset
from distil.data.transfer import unlabelled
from distil.distiller import Distiller
from distil.errors import ConfigError
from distil.evaluate import evaluate_model
from distil.teacher import TeacherEnsemble


def dirichlet_shards(labels: Tensor, clients: int, alpha: float, seed: int) -> list[Tensor]:
    """Row indices of each client: every class split over the clients in proportions drawn from
    Dirichlet(alpha) (small alpha: each client sees few classes). No client is left empty."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        shards: list[list[Tensor]] = [[] for _ in range(clients)]
        for c in labels.unique():
            rows = (labels == c).nonzero().flatten()
            rows = rows[torch.from_numpy(rng.permutation(len(rows)))]
            cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(rows)).round().astype(int)[:-1]
            for k, part in enumerate(torch.tensor_split(rows, cuts.tolist())):
                shards[k].append(part)
        found = [torch.cat(parts).sort().values for parts in shards]
        if min(len(s) for s in found) > 0:
            return found
    raise ConfigError(f"federated: could not give each of {clients} clients a sample; use fewer clients or a larger alpha")


def average_weights(models: list[nn.Module], weights: list[float]) -> dict[str, Tensor]:
    """FedAvg: the weighted mean of the models' parameters and floating buffers (batch-norm
    statistics); integer buffers (batch counters) come from the first model."""
    total = sum(weights)
    states = [m.state_dict() for m in models]
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(w / total * s[key].float() for w, s in zip(weights, states)).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def labels_of(dataset: Dataset) -> Tensor:
    """Class labels of a training split, for sharding (in-memory sets, or read sample by sample)."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) > 1:
        return tensors[1]
    return torch.as_tensor([int(split_batch(dataset[i])["labels"]) for i in range(len(dataset))])


def split_federated(recipe: Recipe, bundle: DataBundle) -> tuple[list[Dataset], Dataset, Dataset]:
    """(client shards, the unlabelled public set, the clients' data pooled) from the training split."""
    cfg = recipe.federated
    if bundle.task != "classification":
        raise ConfigError(f"federated: shards are split by class; task {bundle.task} has no classes")
    n = len(bundle.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(recipe.seed))
    public_rows, private_rows = order[: round(cfg.public_share * n)].sort().values, order[round(cfg.public_share * n):]
    if len(public_rows) == 0 or len(private_rows) < cfg.clients:
        raise ConfigError(f"federated.public_share: {cfg.public_share} of {n} training samples leaves "
                          f"{len(public_rows)} public and {len(private_rows)} for {cfg.clients} clients")
    private_rows = private_rows.sort().values
    labels = labels_of(bundle.train)[private_rows]
    shards = dirichlet_shards(labels, cfg.clients, cfg.alpha, recipe.seed)
    clients = [_rows(bundle.train, private_rows[s]) for s in shards]
    return clients, unlabelled(_rows(bundle.train, public_rows)), _rows(bundle.train, private_rows)


def _rows(dataset: Dataset, rows: Tensor) -> Dataset:
    """Some rows of a data set; tensor sets stay tensor sets (the Trainer's fast path), others
    keep their behaviour (`TrainSubset`)."""
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[rows] for t in dataset.tensors))
    return TrainSubset(dataset, rows)


HARD = [LossConfig(name="cross_entropy")]


def _val_metric(model: nn.Module, bundle: DataBundle) -> float | None:
    """The model's accuracy on the validation split (None without one), for the per-round log."""
    if bundle.val is None:
        return None
    metrics, _ = evaluate_model(model, DataLoader(bundle.val, batch_size=512), bundle.task)
    return metrics["accuracy"]


def _stage(recipe: Recipe, distiller: Distiller, bundle: DataBundle, out: Path, epochs: int, seed: int,
           resume: bool, progress: bool, name: str) -> None:
    """One training through the Trainer into `out`, skipped when done there earlier."""
    from distil.pipeline import make_trainer

    if (out / "done.json").is_file():
        return
    stage = recipe.model_copy(update={"epochs": epochs, "output_dir": str(out), "seed": seed,
                                      "early_stopping_patience": None if bundle.val is None else recipe.early_stopping_patience})
    fit = make_trainer(stage, distiller, bundle, progress, name).fit(resume=resume)
    atomic_write_text(out / "done.json", json.dumps({"best_metric": fit.best_metric, "best_epoch": fit.best_epoch}))


def run_federated(recipe: Recipe, bundle: DataBundle, out: Path, resume: bool, progress: bool) -> dict[str, Any]:
    """Every round of FedDF; returns the global model, the last round's clients and their FedAvg,
    and the per-round log (also written to `<out>/federated/rounds.json`)."""
    cfg = recipe.federated
    clients_data, public, _ = split_federated(recipe, bundle)
    sizes = [float(len(d)) for d in clients_data]
    set_seed(recipe.seed)
    global_model = build_model(recipe.student, bundle, "student")
    rounds, folder = [], out / "federated"
    for r in range(1, cfg.rounds + 1):
        here = folder / f"round-{r}"
        clients = []
        for k, data in enumerate(clients_data):
            model = copy.deepcopy(global_model)
            where, name = here / f"client-{k + 1}", f"round {r}/{cfg.rounds} client {k + 1}/{cfg.clients}"
            _stage(recipe, Distiller(model, None, build_losses(HARD)), replace(bundle, train=data, val=None), where,
                   cfg.local_epochs, recipe.seed + 1000 * r + k, resume, progress, name)
            clients.append(load_weights(model.cpu(), where / "best" / "student.safetensors"))
        fedavg = copy.deepcopy(global_model)
        fedavg.load_state_dict(average_weights(clients, sizes))
        ensemble = TeacherEnsemble([copy.deepcopy(c) for c in clients], sizes, combine="mean")  # FedDF's averaged logits
        record = {"round": r, "val_fedavg": _val_metric(fedavg, bundle)}
        rounds.append(record)
        if cfg.fuse == "average":
            global_model = fedavg
            continue
        server = copy.deepcopy(fedavg)
        phase(f"round {r}/{cfg.rounds}: the server distils {cfg.clients} clients into the global model "
              f"on {len(public)} unlabelled samples", progress)
        _stage(recipe, Distiller(server, ensemble, build_losses(recipe.losses)), replace(bundle, train=public),
               here / "server", recipe.epochs, recipe.seed + 1000 * r + 999, resume, progress, f"round {r} server")
        global_model = load_weights(server.cpu(), here / "server" / "best" / "student.safetensors")
        record["server"] = json.loads((here / "server" / "done.json").read_text())
        record["val_global"] = record["server"]["best_metric"]
    atomic_write_text(folder / "rounds.json", json.dumps(rounds, indent=2))
    return {"global": global_model, "fedavg": fedavg, "clients": clients, "ensemble": ensemble, "rounds": rounds,
            "sizes": sizes}


def run_federated_recipe(recipe: Recipe, bundle: DataBundle, out: Path, resume: bool, progress: bool):
    """`distil run` of a federated recipe: the rounds, the pooled baseline if asked, and the test
    evaluation of the global model beside the clients, their FedAvg and their ensemble."""
    from distil.pipeline import RunResult, evaluate_split, train_teacher
    from distil.trainer import FitResult

    from accelerate import PartialState

    if PartialState().num_processes > 1:
        raise ConfigError("federated: the clients and the server are simulated one after another in one process; "
                          "run it without torchrun / accelerate launch")
    found = run_federated(recipe, bundle, out, resume, progress)
    cfg = recipe.federated
    save_weights(found["global"], out / "best" / "student.safetensors")  # what eval, report and export read
    baseline = None
    if recipe.baseline:  # the same student trained on all the clients' data at once, as long as one client
        _, _, pooled = split_federated(recipe, bundle)
        baseline = train_teacher(recipe, recipe.student, replace(bundle, train=pooled), out / "baseline", resume,
                                 progress, "baseline", cfg.rounds * cfg.local_epochs)
    phase("evaluating every model on the test split: accuracy, fidelity to the clients' ensemble, size, latency", progress)
    teacher = found["ensemble"]
    seen: dict = {}  # the teacher's outputs per split, computed once
    metrics = {"teacher": evaluate_split(teacher, bundle, recipe.task, teacher, reference=seen)}
    if baseline is not None:
        metrics["baseline"] = evaluate_split(baseline, bundle, recipe.task, teacher, reference=seen)
    metrics["fedavg"] = evaluate_split(found["fedavg"], bundle, recipe.task, teacher, reference=seen)
    metrics["distilled"] = evaluate_split(found["global"], bundle, recipe.task, teacher, reference=seen)
    each = [evaluate_split(c, bundle, recipe.task, teacher, reference=seen) for c in found["clients"]]
    quality = [k for k, v in each[0].items() if isinstance(v, float) and not k.startswith("latency")]  # costs are the global model's
    metrics["client_mean"] = {k: sum(m[k] for m in each) / len(each) for k in quality}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    last = found["rounds"][-1].get("server", {})
    fit = FitResult(last.get("best_metric"), last.get("best_epoch"), recipe.epochs)
    return RunResult(out, fit, metrics, found["global"])
