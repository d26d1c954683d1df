"""The BiLSTM student's training step: the packed LSTM against the padded path, by share of real tokens.

`packed` runs `pack_padded_sequence` through the bidirectional LSTM (it skips the padding);
`padded` runs each direction over the whole padded batch and reads every row at its last real
token (`BiLSTMClassifier._final_states_padded`, the same numbers). The model picks the padded path
on a CPU when at least `DENSE` of the batch's tokens are real. Tang et al.'s sizes (300-d
embeddings, 150 units, 200-d layer, 20,000 words), batches of 50, forward + backward of the
cross-entropy, 1 thread by default. The check column is the largest difference of the gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from benchlib import Results, default, measure, parser, ratio
from torch.nn.utils.rnn import pack_padded_sequence

from distil.models import MODELS
from distil.text import students

COLUMNS = ["width", "real_share", "packed_ms", "padded_ms", "x_packed", "picked", "max_grad_diff", "status"]


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = dict(embed_dim=default(args, "embed", 16, 300), hidden=default(args, "hidden", 8, 150),
                fc_dim=default(args, "fc", 8, 200))
    model = MODELS.get("bilstm_classifier")(vocab_size=20000, num_classes=2, dropout=0.0, **size)
    res = Results("bilstm_step", args, torch.device("cpu"), COLUMNS,
                  f"BiLSTM student step (forward + backward), batch 50, {size}, {args.threads} thread(s)")
    timing = dict(warmup=default(args, "warmup", 0, 1), repeats=default(args, "repeats", 1, 5), steps=1)
    for width, shortest in ((64, 4), (64, 20), (64, 40), (128, 64), (128, 110)):
        ids = torch.randint(5, 20000, (50, width))
        lengths = torch.randint(shortest, width + 1, (50,))
        lengths[0] = width  # trim_padding cuts every batch to its longest row
        x_mask = (torch.arange(width)[None] < lengths[:, None]).long()
        labels = torch.randint(0, 2, (50,))

        def packed():
            _, (h, _) = model.lstm(pack_padded_sequence(model.embedding(ids), lengths, batch_first=True, enforce_sorted=False))
            return model.head(model.fc(torch.cat([h[0], h[1]], -1)))

        def padded():
            return model.head(model.fc(model._final_states_padded(model.embedding(ids), lengths)))

        times, grads = {}, {}
        for name, forward in (("packed", packed), ("padded", padded)):
            def step(forward=forward):
                model.zero_grad()
                F.cross_entropy(forward(), labels).backward()
            times[name] = measure(step, torch.device("cpu"), **timing)["median_s"]
            step()
            grads[name] = torch.cat([q.grad.flatten() for q in model.parameters()])
        diff = (grads["packed"] - grads["padded"]).abs().max().item()
        share = lengths.sum().item() / (50 * width)
        picked = "padded" if students._mostly_real(model.embedding(ids), lengths) else "packed"
        res.add({"width": width, "real_share": share, "packed_ms": 1000 * times["packed"],
                 "padded_ms": 1000 * times["padded"], "x_packed": ratio(times["padded"], times["packed"]),
                 "picked": picked, "max_grad_diff": diff, "status": "ok" if diff < 1e-5 else f"gradients differ by {diff:.2e}"})
    return res.finish()


if __name__ == "__main__":
    main()
