"""#11 item 5: a pre-trained language-model teacher, SmolLM2-135M-Instruct, distilled into a causal
student of 6.8M parameters on TinyShakespeare (in SmolLM2's tokens), from one top-32 teacher cache.

Rows, each `recipes/lm/shakespeare_smollm2_kd.yaml` per seed, with the same student, data, batch
order and number of steps:

- `text`: the student on the text alone (`token_ce`); the recipe keeps the teacher only so that
  evaluation reports agreement and KL;
- `forward_kl`, `reverse_kl`, `jsd`: `sparse_token_kd` on the cached top 32 tokens plus a tail
  bucket at beta 0, 1 and 0.5 (forward KL, MiniLLM's reverse KL, GKD's JSD);
- `on_policy`: `jsd` with GKD's on-policy mix: a quarter of the steps train on the student's own
  continuations (32 sampled tokens after a 32-token prompt), which the live teacher scores into
  the cache's form; the other steps read the cache.

Every run shares one cache (`<runs>/teacher_cache`, built by the first cached run: start that one
alone). Columns, on the test windows: perplexity and NLL (nats per token), next-token accuracy and
agreement with the teacher (%), KL(teacher || student) per token, and the training loop's minutes
(the teacher's cache and the evaluations not included). Runs already finished are read back.

    OMP_NUM_THREADS=1 python bench/lm_smollm2.py --rows forward_kl --seeds 0    # builds the cache
    OMP_NUM_THREADS=1 python bench/lm_smollm2.py --rows text reverse_kl jsd on_policy --seeds 0 1 2
    python bench/lm_smollm2.py --report

`--smoke` runs the code paths in seconds on the generated `toy_text` with small random models.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
import yaml
from benchlib import Results, finished_runs, grid_parser, run_grid

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "lm" / "shakespeare_smollm2_kd.yaml"
ROWS = {"text": "on the text alone (token_ce)", "forward_kl": "forward KL, top-32 cache",
        "reverse_kl": "reverse KL, top-32 cache", "jsd": "JSD(0.5), top-32 cache",
        "on_policy": "JSD(0.5), top-32 cache + 25% on-policy steps"}
BETA = {"forward_kl": 0.0, "reverse_kl": 1.0, "jsd": 0.5, "on_policy": 0.5}
COLUMNS = ["row", "model", "perplexity", "std", "per_seed", "x_text", "nll", "accuracy", "agreement", "kl",
           "train_minutes", "seeds", "status"]


def row_recipe(row: str, seed: int, args) -> dict:
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(seed=seed)
    recipe["data"]["params"]["root"] = str(args.root)
    recipe["teacher"]["cache"]["path"] = str(args.runs / "teacher_cache")  # one cache for every run
    if args.smoke:  # random GPT-2s on generated characters: the code paths, not the result
        recipe["data"] = {"name": "toy_text", "params": {"n_chars": 6000, "block_size": 32}, "batch_size": 8}
        recipe["teacher"] = {"model": "hf_causal_lm", "params": {"hidden_size": 32, "num_heads": 2}, "epochs": 1,
                             "cache": {"top_k": 4}}  # each run trains its own, so each has its own cache
        recipe["student"]["params"].update(hidden_size=16, num_heads=2)
        recipe.update(epochs=1, max_steps=3)
    if row == "text":
        del recipe["teacher"]["cache"]
        recipe["losses"] = [{"name": "token_ce"}]
        return recipe
    recipe["losses"] = [{"name": "sparse_token_kd", "beta": BETA[row]}]
    if row == "on_policy":
        prompt = 8 if args.smoke else 32
        recipe["on_policy"] = {"fraction": 0.25, "prompt_tokens": prompt, "max_new_tokens": prompt}
    return recipe


def table(args) -> dict:
    done = {row: finished_runs(args.runs / row) for row in ROWS}
    res = Results("lm_smollm2", args, torch.device("cpu"), COLUMNS,
                  "TinyShakespeare test windows in SmolLM2 tokens: SmolLM2-135M-Instruct and a 6.8M-parameter Llama "
                  "student on the text alone and distilled, final epoch, mean +- std over seeds")
    any_run = next((m for runs in done.values() for m in runs.values()), None)
    if any_run is not None and "teacher" in any_run:
        t = any_run["teacher"]
        res.add({"row": "teacher", "model": "SmolLM2-135M-Instruct (Q4_1 GGUF)", "perplexity": t["perplexity"],
                 "nll": t["nll"], "accuracy": 100 * t["token_accuracy"], "status": "ok"})
    text = {s: m["distilled"]["perplexity"] for s, m in done["text"].items()}
    for row, name in ROWS.items():
        runs = done[row]
        if not runs:
            continue
        d = {s: m["distilled"] for s, m in runs.items()}
        ppl = {s: m["perplexity"] for s, m in d.items()}
        ratios = [ppl[s] / text[s] for s in ppl if s in text]
        mean = lambda key, scale=1.0: statistics.mean(scale * m[key] for m in d.values()) if all(key in m for m in d.values()) else None  # noqa: E731
        res.add({"row": row, "model": name, "perplexity": statistics.mean(ppl.values()),
                 "std": statistics.stdev(ppl.values()) if len(ppl) > 1 else None,
                 "per_seed": " ".join(f"{p:.1f}" for p in ppl.values()),
                 "x_text": statistics.mean(ratios) if ratios else None, "nll": mean("nll"),
                 "accuracy": mean("token_accuracy", 100), "agreement": mean("agreement", 100), "kl": mean("kl"),
                 "train_minutes": statistics.mean(m["train_seconds"] for m in runs.values()) / 60,
                 "seeds": " ".join(map(str, runs)), "status": "ok"})
    return res.finish()


def main(argv: list[str] | None = None) -> dict:
    args = grid_parser("SmolLM2-135M into a 6.8M-parameter Llama on TinyShakespeare: forward KL, reverse KL, JSD, "
                       "on-policy", ROWS, ROOT.parent / "shared" / "data" / "lm_text", ROOT / "runs" / "lm_smollm2").parse_args(argv)
    run_grid(args, row_recipe)
    return table(args)


if __name__ == "__main__":
    main()
