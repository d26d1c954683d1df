"""docs/text.md, section 3: sentence-embedding distillation into a static (EmbeddingBag) student.

The teacher is a small randomly initialised BERT saved with `save_pretrained` and loaded back
with `AutoModel.from_pretrained`, mean-pooled to 384-d sentence vectors; the student averages
128-d token vectors, projected to 384-d by the loss. Prints the mean cosine between the projected
student embeddings and the teacher's on held-out sentences, before and after training.
"""

import tempfile

import torch
from torch.utils.data import DataLoader
from transformers import BertConfig, BertModel

from distil.data.text import toy_sentences
from distil.distiller import Distiller
from distil.losses import LOSSES
from distil.models.base import MODELS
from distil.text import TextDataset, encode, word_tokenizer

torch.manual_seed(0)
texts, _ = toy_sentences(400, seed=0)  # unlabelled sentences
held_out, _ = toy_sentences(100, seed=1)
tokenizer = word_tokenizer(texts)
path = tempfile.mkdtemp(prefix="distil-example-")
config = BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=384, num_hidden_layers=1,
                    num_attention_heads=6, intermediate_size=512, max_position_embeddings=32)
BertModel(config).save_pretrained(path)  # stands in for a local sentence-transformer checkpoint

# [start:embeddings]
from transformers import AutoModel
from distil.text import MeanPoolEncoder

teacher = MeanPoolEncoder(AutoModel.from_pretrained(path))          # (B, 384) embeddings
student = MODELS.get("static_embedding")(vocab_size=tokenizer.get_vocab_size(), dim=128)
loss = LOSSES.get("embedding_distill")(mse_weight=1.0, cosine_weight=1.0, student_dim=128, teacher_dim=384)
distiller = Distiller(student, teacher, {"embed": loss})
# ... same loop over dict batches of unlabelled sentences; precompute the teacher's embeddings with
# predict(teacher, inputs) and pass them as `teacher_logits` to train many epochs cheaply.
# [end:embeddings]

val = encode(tokenizer, held_out, max_length=32)


def cosine():
    with torch.no_grad():
        s = loss.projection(student(**val))
        return torch.nn.functional.cosine_similarity(s, teacher.eval()(**val), dim=-1).mean().item()


before = cosine()
data = TextDataset(encode(tokenizer, texts, max_length=32))
opt = torch.optim.Adam(distiller.trainable_parameters(), lr=1e-2)
for epoch in range(3):
    for batch in DataLoader(data, batch_size=64, shuffle=True):
        out = distiller(batch)
        opt.zero_grad(); out["loss"].backward(); opt.step()
print(f"held-out cosine to the teacher: {before:.3f} before, {cosine():.3f} after 3 epochs")
