"""docs/lm.md, "Teacher logit cache": run the teacher once, then train with no teacher at all.

A small GPT-2 teacher is trained briefly on generated character-level text; its top-64 logits
(plus a tail bucket) over the training windows are cached on disk; a Llama student then trains
from the cache with `sparse_token_kd`, and `chunked_sparse_token_kd` (from the student's hidden
states) is checked against it on one cached batch. Prints the cache size, the sparse KD loss of the
first and last steps, and the two losses on one batch.
"""

import os
import tempfile

os.chdir(tempfile.mkdtemp(prefix="distil-example-"))  # the cache/ folder goes to a scratch folder

import torch
from torch.utils.data import DataLoader

from distil.data.text import toy_text
from distil.distiller import Distiller, Term
from distil.losses import TokenCE
from distil.models.hf import hf_causal_lm

torch.manual_seed(0)
data = toy_text(n_chars=20_000, block_size=32)
tokenizer = data.tokenizer
teacher = hf_causal_lm(arch="gpt2", vocab_size=128, hidden_size=64, num_layers=2, num_heads=2, max_length=32)
student = hf_causal_lm(arch="llama", vocab_size=128, hidden_size=32, num_layers=1, num_heads=2, max_length=32)
warm_up = Distiller(teacher, None, {"ce": TokenCE()})  # a teacher is a student without a teacher
teacher_opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
for batch in DataLoader(data.train, batch_size=16, shuffle=True):
    warm_up(batch)["loss"].backward(); teacher_opt.step(); teacher_opt.zero_grad()
teacher.eval()
sequences = [data.train[i]["input_ids"] for i in range(len(data.train))]  # token-id tensors

# [start:cache]
from distil.lm.cache import TeacherCache, build_teacher_cache
from distil.losses import SparseTokenKD

cache = build_teacher_cache(teacher, sequences, "cache/toy-gpt2-top64", k=64,
                            tokenizer=tokenizer, temperature=1.0, dtype="float16")
loader = DataLoader(cache, batch_size=8, collate_fn=TeacherCache.collate, num_workers=2)
distiller = Distiller(student, None, {"kd": SparseTokenKD(temperature=1.0)})  # no teacher at all
# [end:cache]

print(f"cache: {len(cache)} sequences, {cache.bytes_per_token():.0f} bytes per token")
opt = torch.optim.AdamW(distiller.trainable_parameters(), lr=3e-3)
losses = []
for epoch in range(2):
    for cached_batch in loader:
        loss = distiller(cached_batch)["loss"]
        loss.backward(); opt.step(); opt.zero_grad()
        losses.append(loss.item())
print(f"sparse_token_kd: {sum(losses[:5]) / 5:.4f} over the first 5 steps, {sum(losses[-5:]) / 5:.4f} over the last 5")
sparse = distiller

# [start:chunked_sparse]
from distil.losses import ChunkedSparseTokenKD

distiller = Distiller(student, None, {"kd": Term(ChunkedSparseTokenKD(chunk_size=1024),
                                                 student_layers=["model.norm"])})
loss = distiller({**cached_batch, "logits_to_keep": 1})["loss"]
# [end:chunked_sparse]

with torch.no_grad():
    plain = sparse(cached_batch)["loss"].item()
print(f"one batch: chunked_sparse_token_kd {loss.item():.6f}, sparse_token_kd on full logits {plain:.6f}")
