"""docs/lm.md, "Training with the Distiller" and "Memory-lean loss from hidden states".

A 2-layer GPT-2 teacher is trained for a few seconds on generated character-level text
(`toy_text`), then a 1-layer Llama student is distilled from it with GKD's JSD(0.5). Then the
fused `chunked_token_kd` (from hidden states, `logits_to_keep: 1`) is checked against `token_jsd`
on full logits. Prints the JSD before and after training and the two losses on one batch.
"""

import torch
from torch.utils.data import DataLoader

from distil.data.text import toy_text
from distil.distiller import Distiller
from distil.losses import TokenCE
from distil.models.hf import hf_causal_lm

torch.manual_seed(0)
data = toy_text(n_chars=20_000, block_size=32)  # windows {"input_ids", "attention_mask", "labels"}
teacher_tokenizer = student_tokenizer = data.tokenizer
vocab = 128  # the data has len(data.tokenizer) characters; a rounder embedding size is allowed
teacher = hf_causal_lm(arch="gpt2", vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=2, max_length=32)
student = hf_causal_lm(arch="llama", vocab_size=vocab, hidden_size=32, num_layers=1, num_heads=2, max_length=32)
loader = DataLoader(data.train, batch_size=16, shuffle=True)

warm_up = Distiller(teacher, None, {"ce": TokenCE()})  # a teacher is a student without a teacher
teacher_opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
for batch in loader:
    warm_up(batch)["loss"].backward(); teacher_opt.step(); teacher_opt.zero_grad()
teacher.eval()
probe = next(iter(DataLoader(data.val, batch_size=32)))


def val_jsd(distiller):
    with torch.no_grad():
        return distiller(probe)["loss"].item()


from distil.losses import TokenJSD  # noqa: E402

before = val_jsd(Distiller(student, teacher, {"gkd": TokenJSD(beta=0.5)}))

# [start:token_kd]
import torch

from distil.distiller import Distiller
from distil.losses import TokenJSD
from distil.lm.vocab import check_same_vocab

check_same_vocab(teacher, student, teacher_tokenizer, student_tokenizer)  # DistilError otherwise
distiller = Distiller(student, teacher, {"gkd": TokenJSD(beta=0.5)})
opt = torch.optim.AdamW(distiller.trainable_parameters(), lr=3e-3)
for batch in loader:  # {"input_ids", "attention_mask", "labels"}, right-padded
    out = distiller(batch)
    out["loss"].backward(); opt.step(); opt.zero_grad()
# [end:token_kd]

print(f"validation JSD(0.5) to the teacher: {before:.4f} before, {val_jsd(distiller):.4f} after one epoch")
jsd = distiller

# [start:chunked]
from distil.distiller import Term
from distil.losses import ChunkedTokenKD

term = Term(ChunkedTokenKD(kind="jsd", beta=0.5, chunk_size=1024),
            student_layers=["model.norm"],          # Llama / Mistral / Qwen
            teacher_layers=["transformer.ln_f"])   # GPT-2
distiller = Distiller(student, teacher, {"kd": term})
batch = {**batch, "logits_to_keep": 1}  # the models then skip their own full (B, T, V) logits
# [end:chunked]

with torch.no_grad():
    fused = distiller(batch)["loss"].item()
    plain = jsd({k: v for k, v in batch.items() if k != "logits_to_keep"})["loss"].item()
print(f"one batch: chunked_token_kd {fused:.6f}, token_jsd on full logits {plain:.6f}")
