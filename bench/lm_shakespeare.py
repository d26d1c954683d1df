"""Character-level TinyShakespeare on a CPU: does token-level KD beat the same student trained on hard labels?

Everything trains through distil's own pipeline (`run_recipe` on recipes built in code), on the
`tiny_shakespeare` data set (../shared/data/lm_text, 65 characters, nanoGPT's 90/5/5 split) in
windows of 128 characters:

1. teacher: a 4-layer, 128-wide GPT-2 (`hf_causal_lm`) trained with `token_ce` (4 epochs);
2. baseline student: a 2-layer, 64-wide GPT-2 trained with `token_ce` only (2 epochs);
3. distilled student: the same student, same seed (so the same initial weights and batch order),
   same number of optimizer steps, trained with `token_kl` alone (forward KL at T = 1, the
   word-level KD of Kim & Rush 2016 in docs/lm.md) from the frozen teacher;
4. the distilled student again with `chunked_token_kd` (taps on both `transformer.ln_f`, recipe
   `model_inputs: {logits_to_keep: 1}`, so neither model builds its (B, T, V) logits): the same loss, so
   it must reach the same metrics; a one-batch check compares its loss and gradients with `token_kl`.

Steps 2 and 3 run for every `--seeds` value (the teacher is trained once). At the first seed,
`--with-ce` adds `token_kl + 0.1 token_ce` (the toy recipe's mix) and `--matched-baseline` the
baseline trained for as many epochs as fit in the distilled student's training time (the teacher's
forward is not free: is KD better than just training longer?). `--teacher-weights` reuses a
teacher from an earlier run's folder (`--runs`). The baseline's recipe names the teacher only so
that evaluation reports its agreement and KL: `token_ce` never calls it.

Columns, all on the held-out test split (`distil.evaluate.language_model_metrics`): next-token NLL
(nats/char), perplexity, accuracy, agreement with the teacher's argmax, KL(teacher || student)
per token, parameters, and `train_s`, the training loop's wall time (sum over epochs of the
Trainer's own samples/s; validation, checkpoints and the test evaluation excluded). `x_*` columns
are ratios to the baseline student of the same seed. `gain` rows are distilled minus baseline.

`--smoke` trains tiny models for a few steps on generated text (`toy_text`) and needs no ../shared.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from benchlib import HERE, Results, attempt, parser, pick_device, ratio

from distil.build import build_data, build_model
from distil.config import Recipe, recipe_from_dict
from distil.distiller import Distiller, Term
from distil.losses import ChunkedTokenKD, TokenKL
from distil.pipeline import evaluate_split, run_recipe

DATA = HERE.parent.parent / "shared" / "data" / "lm_text"
COLUMNS = ["row", "seed", "params", "x_params", "nll", "x_nll", "ppl", "acc", "x_acc", "agree", "kl", "x_kl",
           "train_s", "x_time", "status"]
FINAL_NORM = ["transformer.ln_f"]  # GPT-2's last layer norm: its output feeds the LM head
LOSSES = {
    "ce": [{"name": "token_ce"}],
    "kl": [{"name": "token_kl"}],
    "kl+ce": [{"name": "token_kl"}, {"name": "token_ce", "weight": 0.1}],
    "chunked": [{"name": "chunked_token_kd", "student_layers": FINAL_NORM, "teacher_layers": FINAL_NORM}],
    "cached": [{"name": "sparse_token_kd"}],
}
CACHE_K = 16  # teacher tokens kept per position by the cached row (of 65 characters)
LABELS = {"ce": "baseline (token_ce)", "kl": "distilled (token_kl)", "kl+ce": "distilled (token_kl + 0.1 token_ce)",
          "chunked": "distilled (chunked_token_kd, logits_to_keep 1)",
          "cached": f"distilled from the top-{CACHE_K} cache (sparse_token_kd)"}


@dataclass
class Setup:
    """Sizes of one experiment; `full` is the measured one, `smoke` checks the code paths in seconds."""

    data: dict[str, Any]
    teacher: dict[str, Any]
    student: dict[str, Any]
    teacher_epochs: int
    epochs: int
    batch_size: int = 32
    optimizer: dict[str, Any] = field(default_factory=lambda: {
        "name": "adamw", "lr": 2e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]})
    schedule: dict[str, Any] = field(default_factory=lambda: {
        "name": "cosine", "warmup_epochs": 0.05, "min_lr_ratio": 0.1})

    @classmethod
    def full(cls, root: Path) -> Setup:
        return cls(
            data={"name": "tiny_shakespeare", "params": {"root": str(root), "block_size": 128}},
            teacher={"arch": "gpt2", "hidden_size": 128, "num_layers": 4, "num_heads": 4, "max_length": 128},
            student={"arch": "gpt2", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "max_length": 128},
            teacher_epochs=4, epochs=2,
        )

    @classmethod
    def smoke(cls) -> Setup:
        return cls(
            data={"name": "toy_text", "params": {"n_chars": 6000, "block_size": 32}},
            teacher={"arch": "gpt2", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_length": 32},
            student={"arch": "gpt2", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 32},
            teacher_epochs=2, epochs=1, batch_size=16,
        )


def make_recipe(setup: Setup, out: Path, *, model: dict, loss: str, seed: int, epochs: int,
                teacher: Path | None = None, cpu: bool = True) -> Recipe:
    raw = {
        "seed": seed, "task": "language_modeling", "cpu": cpu, "output_dir": str(out),
        "data": setup.data | {"batch_size": setup.batch_size},
        "student": {"model": "hf_causal_lm", "params": model},
        "losses": LOSSES[loss], "optimizer": setup.optimizer, "schedule": setup.schedule,
        "epochs": epochs, "max_grad_norm": 1.0,
        "model_inputs": {"logits_to_keep": 1} if loss == "chunked" else {},
    }
    if teacher is not None:
        raw["teacher"] = {"model": "hf_causal_lm", "params": setup.teacher, "checkpoint": str(teacher)}
        if loss == "cached":  # built once into the run folder, outside the training loop's time
            raw["teacher"]["cache"] = {"top_k": CACHE_K}
    return recipe_from_dict(raw)


def train_seconds(history: list[dict[str, Any]], n_train: int) -> float:
    """The training loop's wall time: each epoch's samples over the Trainer's measured samples/s."""
    return sum(n_train / h["train/samples_per_s"] for h in history)


def summary(metrics: dict[str, Any], history: list[dict[str, Any]], n_train: int) -> dict[str, Any]:
    m = metrics
    return {"params": m["params"], "nll": m["nll"], "ppl": m["perplexity"], "acc": m["token_accuracy"],
            "agree": m.get("agreement"), "kl": m.get("kl"), "train_s": train_seconds(history, n_train),
            "train_losses": [{k: v for k, v in h.items() if k.startswith("train/") and k != "train/samples_per_s"}
                             for h in history]}


def run_stage(recipe: Recipe, name: str) -> tuple[dict[str, Any], Any]:
    """`run_recipe` with progress off; the evaluated model's summary and the run."""
    start = time.perf_counter()
    run = run_recipe(recipe, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    n_train = len(build_data(recipe).train)
    print(f"{name}: {seconds:.1f} s (run_recipe, evaluation included)", flush=True)
    return summary(run.metrics["distilled"], run.fit.history, n_train) | {"run_s": seconds}, run


def loss_check(recipe: Recipe) -> dict[str, float]:
    """One test batch, the trained teacher, the student at its initial weights: `chunked_token_kd`
    with `logits_to_keep: 1` against `token_kl` on full logits (loss and student gradients)."""
    bundle = build_data(recipe)
    teacher = build_model(recipe.teachers[0], bundle, "teacher")
    set_seed(recipe.seed)
    student = build_model(recipe.student, bundle, "student")
    batch = next(iter(torch.utils.data.DataLoader(bundle.test, batch_size=8)))
    results = []
    for loss, extra in ((TokenKL(), {}), (Term(ChunkedTokenKD(), student_layers=FINAL_NORM, teacher_layers=FINAL_NORM),
                                                   {"logits_to_keep": 1})):
        distiller = Distiller(student, teacher, {"kd": loss})
        value = distiller(batch | extra)["loss"]
        results.append((value.detach(), torch.autograd.grad(value, list(student.parameters()))))
        distiller.close()
    (plain, plain_grads), (chunked, chunked_grads) = results
    grad_err = max(((c - p).norm() / p.norm().clamp_min(1e-12)).item() for c, p in zip(chunked_grads, plain_grads))
    return {"loss_token_kl": plain.item(), "loss_chunked": chunked.item(),
            "loss_rel_err": ((chunked - plain).abs() / plain.abs()).item(), "grad_rel_err": grad_err}


def with_ratios(row: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    base = base or {}
    pairs = {"x_params": "params", "x_nll": "nll", "x_acc": "acc", "x_kl": "kl", "x_time": "train_s"}
    return row | {x: ratio(row.get(k), base.get(k)) for x, k in pairs.items()}


GAIN_KEYS = ("nll", "ppl", "acc", "agree", "kl")


def gain(distilled: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    return {k: distilled[k] - base[k] for k in GAIN_KEYS if distilled.get(k) is not None and base.get(k) is not None}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.4f} ± {sd:.4f}"


def add_gains(res: Results, pairs: dict[int, tuple[dict, dict]]) -> None:
    """Per-seed gain rows, their mean ± sd, and the baseline's own seed-to-seed spread as a note."""
    gains = {s: gain(d, b) for s, (b, d) in pairs.items() if b.get("status") == "ok" and d.get("status") == "ok"}
    for s, g in gains.items():
        res.add({"row": "gain: distilled - baseline", "seed": s, **g, "status": "ok"})
    if len(gains) > 1:
        res.add({"row": "gain: mean ± sd over seeds", "seed": "all", "status": "ok",
                 **{k: mean_sd([g[k] for g in gains.values()]) for k in GAIN_KEYS}})
        base_nll = [pairs[s][0]["nll"] for s in gains]
        res.note(f"baseline test NLL over seeds {list(gains)}: {mean_sd(base_nll)[1:]} nats/char (seed-to-seed spread "
                 "of the hard-label student, to compare with the gain)")


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA,
                   help="folder holding tinyshakespeare.txt (default ../shared/data/lm_text)")
    p.add_argument("--seeds", type=int, nargs="+", help="student seeds (default 0 1 2; smoke 0 1)")
    p.add_argument("--teacher-epochs", type=int, help="teacher epochs (default 4: 984 steps of 32 windows)")
    p.add_argument("--teacher-weights", type=Path, help="a teacher trained by an earlier run (its runs folder's "
                   "teacher/best/student.safetensors, same sizes): skips training it")
    p.add_argument("--epochs", type=int, help="student epochs, every student (default 2: 492 steps)")
    p.add_argument("--no-chunked", action="store_true", help="skip the chunked_token_kd student")
    p.add_argument("--with-ce", action="store_true", help="also token_kl + 0.1 token_ce at the first seed")
    p.add_argument("--cached", action="store_true", help=f"also the student distilled from a top-{CACHE_K} teacher "
                   "cache (teacher.cache) at the first seed, and a baseline given its training time")
    p.add_argument("--matched-baseline", action="store_true", help="also the baseline at the first seed trained "
                   "for as many epochs as fit in the distilled student's training time")
    p.add_argument("--runs", type=Path, help="keep the run folders here (default: a temporary folder, removed)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: a shared 2-core machine)")
    args = p.parse_args(argv)
    if not args.smoke and not (args.data / "tinyshakespeare.txt").is_file():
        p.error(f"{args.data / 'tinyshakespeare.txt'} not found: the full run needs the shared TinyShakespeare "
                "text (../shared/data/lm_text); pass --data FOLDER, or --smoke for generated text")
    torch.set_num_threads(args.threads)
    setup = Setup.smoke() if args.smoke else Setup.full(args.data)
    setup.teacher_epochs = args.teacher_epochs or setup.teacher_epochs
    setup.epochs = args.epochs or setup.epochs
    args.seeds = args.seeds or ([0, 1] if args.smoke else [0, 1, 2])
    device = pick_device(args)
    res = Results("lm_shakespeare", args, device, COLUMNS, "char-level GPT-2 KD vs the same student on hard labels")
    res.data["setup"] = vars(setup)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        experiment(res, setup, args, args.runs or Path(tmp), device.type == "cpu")
    res.note(f"whole experiment: {time.perf_counter() - start:.0f} s, torch threads {torch.get_num_threads()}")
    return res.finish()


def given_teacher(recipe: Recipe) -> dict[str, Any]:
    """The test metrics of a teacher trained earlier (its training time is not this run's)."""
    bundle = build_data(recipe)
    metrics = evaluate_split(build_model(recipe.teachers[0], bundle, "teacher"), bundle, recipe.task)
    return summary(metrics, [], len(bundle.train)) | {"train_s": None}


def experiment(res: Results, setup: Setup, args: Any, runs: Path, cpu: bool) -> None:
    seeds = args.seeds
    weights = args.teacher_weights or runs / "teacher" / "best" / "student.safetensors"

    def student(loss: str, seed: int, epochs: int = setup.epochs) -> Recipe:
        folder = runs / f"{loss}_seed{seed}" if epochs == setup.epochs else runs / f"{loss}_seed{seed}_{epochs}ep"
        return make_recipe(setup, folder, model=setup.student, loss=loss, seed=seed, epochs=epochs,
                           teacher=weights, cpu=cpu)

    if args.teacher_weights:
        teacher = given_teacher(student("ce", seeds[0]))
    else:
        teacher, _ = run_stage(make_recipe(setup, runs / "teacher", model=setup.teacher, loss="ce", seed=0,
                                           epochs=setup.teacher_epochs, cpu=cpu), "teacher")
    pairs: dict[int, tuple[dict, dict]] = {}
    for seed in seeds:
        base = attempt(lambda: run_stage(student("ce", seed), f"baseline seed {seed}")[0],
                       {"row": LABELS["ce"], "seed": seed})
        if seed == seeds[0]:
            res.add(with_ratios({"row": "teacher (token_ce)", "seed": 0, "status": "ok"} | teacher, base))
        res.add(with_ratios(base, base))
        kd = attempt(lambda: run_stage(student("kl", seed), f"distilled seed {seed}")[0],
                     {"row": LABELS["kl"], "seed": seed})
        pairs[seed] = (base, res.add(with_ratios(kd, base)))
    extras(res, setup, args, student, pairs[seeds[0]])
    add_gains(res, pairs)
    res.note("x_* = ratio to the baseline student of the same seed (the teacher's: to the first seed's); "
             "train_s = training loop only; gain rows = distilled (token_kl) minus baseline")


def extras(res: Results, setup: Setup, args: Any, student: Any, first: tuple[dict, dict]) -> None:
    """The optional rows, all at the first seed: chunked KD, KL + CE, the time-matched baseline."""
    (base0, kd0), seed = first, args.seeds[0]
    if not args.no_chunked:
        res.data["loss_check"] = check = loss_check(student("chunked", seed))
        res.note(f"one-batch check (trained teacher, initial student): chunked_token_kd with logits_to_keep 1 vs "
                 f"token_kl: loss rel. err {check['loss_rel_err']:.1e}, max student-gradient rel. err "
                 f"{check['grad_rel_err']:.1e}")
        row = res.add(with_ratios(attempt(lambda: run_stage(student("chunked", seed), "chunked")[0],
                                          {"row": LABELS["chunked"], "seed": seed}), base0))
        if row["status"] == "ok" and kd0["status"] == "ok":
            res.data["chunked_vs_token_kl"] = diff = {k: row[k] - kd0[k] for k in GAIN_KEYS}
            res.note("chunked minus token_kl student, test metrics: "
                     + ", ".join(f"{k} {v:+.1e}" for k, v in diff.items()))
    if args.with_ce:
        res.add(with_ratios(attempt(lambda: run_stage(student("kl+ce", seed), "kl+ce")[0],
                                    {"row": LABELS["kl+ce"], "seed": seed}), base0))
    if args.cached:
        row = res.add(with_ratios(attempt(lambda: run_stage(student("cached", seed), "cached")[0],
                                          {"row": LABELS["cached"], "seed": seed}), base0))
        if row["status"] == "ok":
            res.note(f"cached row: train_s excludes building the cache (one teacher pass over the training "
                     f"set, in its run_s of {row['run_s']:.0f} s with evaluation); cached minus baseline test NLL "
                     f"{row['nll'] - base0['nll']:+.4f} nats/char at equal steps")
    if args.matched_baseline and base0["status"] == kd0["status"] == "ok":
        epochs = max(setup.epochs, round(setup.epochs * kd0["train_s"] / base0["train_s"]))
        row = res.add(with_ratios(attempt(lambda: run_stage(student("ce", seed, epochs), "matched baseline")[0],
                                          {"row": f"baseline (token_ce), {epochs} epochs", "seed": seed}), base0))
        if row["status"] == "ok":
            res.note(f"time-matched baseline ({epochs} epochs, {row['train_s']:.0f} s) minus the distilled student "
                     f"({setup.epochs} epochs, {kd0['train_s']:.0f} s): test NLL "
                     f"{row['nll'] - kd0['nll']:+.4f} nats/char")


if __name__ == "__main__":
    main()
