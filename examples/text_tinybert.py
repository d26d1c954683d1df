"""docs/text.md, section 2: TinyBERT (and MiniLM) between BERTs of different depth and width.

Teacher: a 2-layer, 96-wide BERT briefly trained on generated sentiment sentences; student: a
1-layer, 48-wide BERT; both with 12 heads, as `heads=12` assumes. Stage 1 (epochs 0-4) fits
embeddings, hidden states and attention scores through learned width projections, stage 2 the
predictions. Prints the loss parts per epoch, the student's accuracy and a MiniLM loss.
"""

import torch
from torch.utils.data import DataLoader

from distil.data.text import toy_sentiment
from distil.distiller import Distiller
from distil.losses import CrossEntropy
from distil.models.hf import hf_bert_classifier

torch.manual_seed(0)
data = toy_sentiment(n_train=384, n_val=64, n_test=200)
bert = dict(num_classes=2, vocab_size=data.model_kwargs["vocab_size"], num_heads=12, max_length=24,
            dropout=0.0, attention_dropout=0.0)
teacher = hf_bert_classifier(hidden_size=96, num_layers=2, **bert)
student = hf_bert_classifier(hidden_size=48, num_layers=1, **bert)
loader = DataLoader(data.train, batch_size=32, shuffle=True)
first_batch = next(iter(loader))

warm_up = Distiller(teacher, None, {"ce": CrossEntropy()})
teacher_opt = torch.optim.AdamW(teacher.parameters(), lr=1e-3)
for epoch in range(5):
    for batch in loader:
        warm_up(batch)["loss"].backward(); teacher_opt.step(); teacher_opt.zero_grad()
teacher.eval()

# [start:tinybert]
from distil.distiller import Distiller, Term
from distil.losses import LOSSES
from distil.text import transformer_layers as names

t_qk = names(teacher, "query") + names(teacher, "key")   # queries of every layer, then keys
s_qk = names(student, "query") + names(student, "key")
last = lambda m: [names(m, w)[-1] for w in ("query", "key", "value")]
terms = {
    # stage 1 (epochs 0-4): intermediate layers
    "embd": Term(LOSSES.get("tinybert_embedding")(), student_layers=names(student, "embeddings"),
                 teacher_layers=names(teacher, "embeddings"), end_epoch=5),
    "hidn": Term(LOSSES.get("tinybert_hidden")(mapping="uniform"), student_layers=names(student, "hidden"),
                 teacher_layers=names(teacher, "hidden"), end_epoch=5),
    "attn": Term(LOSSES.get("tinybert_attention")(heads=12), student_layers=s_qk, teacher_layers=t_qk, end_epoch=5),
    # stage 2: prediction layer
    "pred": Term(LOSSES.get("tinybert_prediction")(temperature=1.0), start_epoch=5),
}
# MiniLM instead of the TinyBERT intermediate terms:
# "minilm": Term(LOSSES.get("minilm")(heads=12), student_layers=last(student), teacher_layers=last(teacher))
distiller = Distiller(student, teacher, terms)
distiller.setup(first_batch)  # creates the width projections W_e, W_h BEFORE the optimizer
opt = torch.optim.AdamW(distiller.trainable_parameters(), lr=5e-5)
# [end:tinybert]

for group in opt.param_groups:
    group["lr"] = 2e-3  # these tiny random BERTs learn faster than the pre-trained ones the paper tunes for
for epoch in range(7):
    distiller.set_epoch(epoch)
    sums = dict.fromkeys(terms, 0.0)
    for batch in loader:
        out = distiller(batch)
        opt.zero_grad(); out["loss"].backward(); opt.step()
        for k in terms:
            sums[k] += out[k].item() / len(loader)
    print(f"epoch {epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in sums.items()))

x = {k: v for k, v in data.test.columns.items() if k != "labels"}
with torch.no_grad():
    for name, model in (("teacher", teacher), ("student", student)):
        right = model.eval()(**x).logits.argmax(-1) == data.test.columns["labels"]
        print(f"{name} test accuracy: {right.float().mean():.1%}")

minilm = Distiller(student, teacher, {"minilm": Term(LOSSES.get("minilm")(heads=12), student_layers=last(student),
                                                     teacher_layers=last(teacher))})
with torch.no_grad():
    print(f"minilm loss on one batch: {minilm(first_batch)['loss'].item():.4f}")
