"""Students that are not networks: scikit-learn estimators fitted to a teacher's soft targets.

Bucilua, Caruana & Niculescu-Mizil, "Model Compression", KDD 2006, label a large transfer set
with the teacher and fit the small model to it; whether trees and linear models gain from soft
targets the way networks do is an open question of the literature, which these fit paths test:

- "soft_labels" (classifiers): each sample is repeated once per class c with weight p_t(c | x)
  (rows under `min_weight` dropped), so a log-loss model (logistic regression, gradient-boosted
  trees) minimises exactly the cross-entropy to the teacher's distribution, and a tree its
  weighted impurity.
- "logits" (regressors): the estimator regresses the teacher's centred log-probabilities (logit
  matching, Ba & Caruana 2014); its predictions are used as logits.
- "hard" (classifiers): the teacher's argmax on the transfer set, or the gold labels: the baseline.

`EstimatorStudent` wraps the fitted estimator as a module (log-probabilities out), so the same
evaluation, fidelity metrics and report serve it as any student.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from distil.errors import ConfigError

METHODS = ("soft_labels", "logits", "hard")


def _estimators() -> dict[str, Callable[..., Any]]:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    return {
        "logistic_regression": LogisticRegression, "decision_tree": DecisionTreeClassifier,
        "gradient_boosting": HistGradientBoostingClassifier, "random_forest": RandomForestClassifier,
        "decision_tree_regressor": DecisionTreeRegressor, "random_forest_regressor": RandomForestRegressor,
        "ridge": Ridge,
    }


def make_estimator(name: str, params: dict[str, Any] | None = None) -> Any:
    """A scikit-learn estimator by its distil name, e.g. `make_estimator("decision_tree", {"max_depth": 8})`."""
    known = _estimators()
    if name not in known:
        raise ConfigError(f"estimator: unknown {name!r}; known: {', '.join(known)}")
    try:
        return known[name](**(params or {}))
    except TypeError as e:
        raise ConfigError(f"estimator {name}: {e}") from None


def soft_label_rows(x: np.ndarray, probs: np.ndarray, min_weight: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x repeated, class of each row, weight p(c | x)): one row per (sample, class) with p >= min_weight.

    The weights of each sample's kept rows are renormalised to 1, so every sample counts once.
    """
    keep = probs >= min_weight
    keep[np.arange(len(probs)), probs.argmax(1)] = True  # every sample keeps its top class
    weights = np.where(keep, probs, 0.0)
    weights /= weights.sum(1, keepdims=True)
    rows, classes = np.nonzero(keep)
    return x[rows], classes, weights[rows, classes]


def fit_estimator(estimator: Any, x: np.ndarray, teacher_logits: np.ndarray | None = None, *,
                  method: str = "soft_labels", labels: np.ndarray | None = None, temperature: float = 1.0,
                  min_weight: float = 1e-3) -> "EstimatorStudent":
    """Fit `estimator` on inputs `x` (N, features) to the teacher's outputs (N, C), or to `labels`.

    method "hard" fits `labels` when given, else the teacher's argmax. The temperature softens the
    teacher's distribution for "soft_labels" (T > 1 spreads weight to the runner-up classes).
    """
    if method not in METHODS:
        raise ConfigError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "hard" or labels is None:
        if teacher_logits is None:
            raise ConfigError(f"method {method}: needs the teacher's outputs on the transfer set")
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    num_classes = teacher_logits.shape[1] if teacher_logits is not None else int(labels.max()) + 1
    if method == "hard":
        y = labels if labels is not None else teacher_logits.argmax(1)
        estimator.fit(x, y)
    elif method == "soft_labels":
        probs = torch.softmax(torch.as_tensor(teacher_logits, dtype=torch.float64) / temperature, -1).numpy()
        rows, classes, weights = soft_label_rows(x, probs, min_weight)
        estimator.fit(rows, classes, sample_weight=weights)
    else:
        log_p = torch.log_softmax(torch.as_tensor(teacher_logits, dtype=torch.float64), -1)
        estimator.fit(x, (log_p - log_p.mean(-1, keepdim=True)).numpy())
    return EstimatorStudent(estimator, num_classes, regressor=method == "logits")


class EstimatorStudent(nn.Module):
    """A fitted estimator as a module: `(B, ...) inputs -> (B, C)` log-probabilities (classifiers)
    or predicted logits (regressors), on the inputs' device. Not trainable, not exportable."""

    def __init__(self, estimator: Any, num_classes: int, regressor: bool = False):
        super().__init__()
        self.estimator, self.num_classes, self.regressor = estimator, num_classes, regressor

    def forward(self, inputs: Tensor) -> Tensor:
        x = inputs.detach().float().cpu().reshape(len(inputs), -1).numpy()
        if self.regressor:
            return torch.as_tensor(self.estimator.predict(x), dtype=torch.float32, device=inputs.device)
        probs = np.zeros((len(x), self.num_classes), dtype=np.float64)
        probs[:, self.estimator.classes_] = self.estimator.predict_proba(x)  # classes never seen stay at 0
        return torch.as_tensor(probs, device=inputs.device).clamp_min(1e-12).log().float()

    def param_count(self) -> int:
        """Learned numbers: coefficients of a linear model, nodes of trees (a tree node is a few numbers)."""
        est = self.estimator
        if hasattr(est, "coef_"):
            return int(np.size(est.coef_) + np.size(getattr(est, "intercept_", 0)))
        trees = getattr(est, "estimators_", None)
        if hasattr(est, "tree_"):
            return int(est.tree_.node_count)
        if trees is not None:
            return int(sum(t.tree_.node_count for t in np.ravel(trees)))
        predictors = getattr(est, "_predictors", None)  # HistGradientBoosting
        if predictors is not None:
            return int(sum(len(p.nodes) for stage in predictors for p in stage))
        return 0

    def serialized_bytes(self) -> int:
        """Size of the fitted estimator as scikit-learn would store it (pickled here only to measure)."""
        return len(pickle.dumps(self.estimator, protocol=pickle.HIGHEST_PROTOCOL))


# ----- the recipe stage: `student: {estimator: ...}` -----

def fit_set(recipe: Any, bundle: Any, transfer: Any = None) -> tuple[Tensor, Tensor, Tensor]:
    """(inputs the teacher labels, training inputs, their gold labels): the training split plus
    `student.copies` shifted copies of each image, plus a transfer set (or that alone with `only`)."""
    from torch.utils.data import DataLoader

    from distil.batch import split_batch
    from distil.data.jitter import shift_images

    def tensors(dataset: Any) -> tuple[Tensor, Tensor]:
        parts = [split_batch(b) for b in DataLoader(dataset, batch_size=1024)]
        return torch.cat([p["inputs"] for p in parts]).float(), torch.cat([p["labels"] for p in parts])

    x, y = tensors(bundle.train)
    views = [x]
    if recipe.student.copies:
        g = torch.Generator().manual_seed(recipe.seed)
        views += [shift_images(x, torch.randint(-1, 2, (len(x), 2), generator=g), 1) for _ in range(recipe.student.copies)]
    if transfer is not None:
        extra, _ = tensors(transfer)
        views = [extra] if recipe.transfer.only else [*views, extra]
    return torch.cat(views), x, y


def run_estimator_recipe(recipe: Any, bundle: Any, out: Any, resume: bool, progress: bool) -> Any:
    """Teacher(s) loaded or trained as in any run, then the estimator fitted to their outputs on the
    fit set; with `baseline: true` the same estimator (same settings and seed) fitted to the gold
    labels of the training split. Both are evaluated like network students into metrics.json."""
    import json
    import time

    from distil.build import build_transfer
    from distil.checkpoint import atomic_write_text
    from distil.console import phase
    from distil.pipeline import RunResult, _as_teacher, evaluate_split, load_teachers
    from distil.trainer import FitResult

    cfg = recipe.student
    teachers = load_teachers(recipe, bundle, out, resume, progress)
    inputs, x, y = fit_set(recipe, bundle, build_transfer(recipe, bundle))
    teacher = _as_teacher(recipe, teachers)  # frozen, on the CPU
    phase(f"estimator: the teacher labels {len(inputs)} inputs; fitting {cfg.estimator} ({cfg.method})", progress)
    logits = torch.cat([teacher(inputs[i:i + 1024]).float() for i in range(0, len(inputs), 1024)])
    start = time.perf_counter()
    student = fit_estimator(_seeded(cfg, recipe.seed), inputs.numpy(), logits.numpy(), method=cfg.method,
                            temperature=cfg.temperature, min_weight=cfg.min_weight)
    fit_s = time.perf_counter() - start
    phase("evaluating the teacher and the estimator on the test split", progress)
    seen: dict = {}  # the teacher's outputs per split, computed once
    metrics = {"teacher": evaluate_split(teacher, bundle, recipe.task, teacher, reference=seen)}
    if recipe.baseline:
        baseline = fit_estimator(_seeded(cfg, recipe.seed), x.numpy(), method="hard", labels=y.numpy())
        metrics["baseline"] = evaluate_split(baseline, bundle, recipe.task, teacher, reference=seen)
    metrics["distilled"] = evaluate_split(student, bundle, recipe.task, teacher, reference=seen) | {
        "fit_s": fit_s, "fit_inputs": len(inputs)}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return RunResult(out, FitResult(best_metric=None, best_epoch=None, epochs_run=0), metrics, student)


def _seeded(cfg: Any, seed: int) -> Any:
    """The configured estimator, seeded by the run's seed unless its params give random_state."""
    estimator = make_estimator(cfg.estimator, cfg.params)
    if "random_state" in estimator.get_params() and "random_state" not in cfg.params:
        estimator.set_params(random_state=seed)
    return estimator
