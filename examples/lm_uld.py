"""docs/lm.md, "Cross-tokenizer distillation: uld": a teacher with its own tokenizer.

The teacher (a small GPT-2 over one character vocabulary, trained briefly) and the student (a
Llama over a different, smaller vocabulary) cannot be compared token by token. The teacher's
response rows are precomputed per example and ride in each batch as `teacher_logits`; the student
trains on CE + ULD. Prints the vocabulary check's refusal and ULD before and after training.
"""

import torch
from torch.utils.data import DataLoader

from distil.data.text import TOY_CHARS, CharTokenizer, toy_text
from distil.distiller import Distiller
from distil.errors import DistilError
from distil.lm.tokens import pad_batch
from distil.lm.vocab import check_same_vocab
from distil.losses import ULD, TokenCE
from distil.models.hf import hf_causal_lm

torch.manual_seed(0)
data = toy_text(n_chars=20_000, block_size=32)  # windows in the teacher's tokenization
teacher_tokenizer = data.tokenizer
student_tokenizer = CharTokenizer(["<pad>", *reversed(TOY_CHARS)])  # other ids, other vocabulary size
teacher = hf_causal_lm(arch="gpt2", vocab_size=128, hidden_size=64, num_layers=2, num_heads=2, max_length=32)
student = hf_causal_lm(arch="llama", vocab_size=len(student_tokenizer), hidden_size=32, num_layers=1, num_heads=2,
                       max_length=32)
warm_up = Distiller(teacher, None, {"ce": TokenCE()})
teacher_opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
for batch in DataLoader(data.train, batch_size=16, shuffle=True):
    warm_up(batch)["loss"].backward(); teacher_opt.step(); teacher_opt.zero_grad()
teacher.eval()
try:
    check_same_vocab(teacher, student, teacher_tokenizer, student_tokenizer)
except DistilError as e:
    print("check_same_vocab:", str(e).split(":")[0])

# [start:rows]
def teacher_rows(ids_t, labels_t):
    """ids_t, labels_t: one example under the teacher's own tokenizer, labels_t = -100 on the prompt."""
    with torch.no_grad():
        logits = teacher(input_ids=ids_t[None]).logits[0, :-1]  # (L - 1, V_t): row t predicts token t + 1
    return logits[labels_t[1:] != -100]                           # (n_t, V_t): the response predictions
# collate: pad rows to the longest n_t with zeros (distil.lm.tokens.pad_batch pads extra keys with zeros)
# [end:rows]


PROMPT = 12  # characters of each window that are prompt, not response
examples = []
for i in range(len(data.train)):
    text = teacher_tokenizer.decode(data.train[i]["input_ids"])
    ids_t, ids_s = (torch.tensor(tok.encode(text)) for tok in (teacher_tokenizer, student_tokenizer))
    labels_t, labels_s = ids_t.clone(), ids_s.clone()
    labels_t[:PROMPT] = labels_s[:PROMPT] = -100
    examples.append({"input_ids": ids_s, "labels": labels_s, "teacher_logits": teacher_rows(ids_t, labels_t)})
loader = DataLoader(examples, batch_size=16, shuffle=True, collate_fn=pad_batch)
probe = pad_batch(examples[:64])

distiller = Distiller(student, None, {"ce": TokenCE(), "uld": ULD(teacher_rows="response_only")})
opt = torch.optim.AdamW(distiller.trainable_parameters(), lr=3e-3)
with torch.no_grad():
    before = distiller(probe)["uld"].item()
for epoch in range(2):
    for batch in loader:
        distiller(batch)["loss"].backward(); opt.step(); opt.zero_grad()
with torch.no_grad():
    print(f"uld on 64 training windows: {before:.4f} before, {distiller(probe)['uld'].item():.4f} after 2 epochs")
