"""docs/text.md, section 1: BERT to BiLSTM on an augmented transfer set (Tang et al. 2019).

The teacher here is a tiny BERT fine-tuned on the four example sentences (a real one would be a
fine-tuned `BertForSequenceClassification`). It labels the augmented transfer set once; the
BiLSTM student learns its logits with MSE. Prints the transfer-set size, the student's final loss
and how often it agrees with the teacher.
"""

import torch

from distil.distiller import Distiller
from distil.losses import CrossEntropy
from distil.models.hf import hf_bert_classifier
from distil.text import encode

torch.manual_seed(0)


def fine_tuned_bert(tokenizer, texts, labels, steps=60):
    """A 2-layer BERT trained on (texts, labels): a stand-in for a fine-tuned teacher."""
    model = hf_bert_classifier(num_classes=2, vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                               num_layers=2, max_length=64, dropout=0.0, attention_dropout=0.0)
    batch = {**encode(tokenizer, texts, max_length=64), "labels": torch.tensor(labels)}
    trainer = Distiller(model, None, {"ce": CrossEntropy()})
    opt = torch.optim.AdamW(trainer.trainable_parameters(), lr=1e-3)
    for _ in range(steps):
        trainer(batch)["loss"].backward(); opt.step(); opt.zero_grad()
    return model.eval()


# [start:bilstm]
import torch
from torch.utils.data import DataLoader

from distil.distiller import Distiller
from distil.losses import LOSSES
from distil.models.base import MODELS
from distil.text import TextDataset, augment, encode, predict, word_tokenizer

texts = ["a great movie", "a dull boring film", "the plot was superb", "the acting was awful"]  # your data
tokenizer = word_tokenizer(texts)  # WordLevel vocabulary; [PAD] = 0, [MASK] is one token
teacher = fine_tuned_bert(tokenizer, texts, labels=[1, 0, 1, 0])  # any fine-tuned classifier, e.g. a BERT

# The teacher labels an augmented transfer set once; its logits ride along in every batch.
transfer = augment(texts, n_iter=20, p_mask=0.1, p_pos=0.1, p_ng=0.25, seed=0)
inputs = encode(tokenizer, transfer, max_length=64)
data = TextDataset(inputs, teacher_logits=predict(teacher, inputs))

student = MODELS.get("bilstm_classifier")(vocab_size=tokenizer.get_vocab_size(), num_classes=2)
distiller = Distiller(student, teacher, {"mse": LOSSES.get("logit_mse")()})
opt = torch.optim.Adam(distiller.trainable_parameters(), lr=1e-3)
for epoch in range(10):
    distiller.set_epoch(epoch)
    for batch in DataLoader(data, batch_size=50, shuffle=True):
        loss = distiller(batch)["loss"]
        opt.zero_grad(); loss.backward(); opt.step()
# [end:bilstm]

student.eval()
agree = (predict(student, inputs).argmax(1) == data.columns["teacher_logits"].argmax(1)).float().mean()
print(f"transfer set: {len(transfer)} sentences from {len(texts)}")
print(f"last batch logit MSE: {loss.item():.4f}")
print(f"student agrees with the teacher on {agree:.0%} of the transfer set")
