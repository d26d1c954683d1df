import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from distil.distiller import Distiller
from distil.losses import LOSSES
from distil.models.base import MODELS
from distil.text import MeanPoolEncoder, encode, mean_pool


def test_mean_pool_hand_value():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]
    assert mean_pool(hidden, None)[0].tolist() == pytest.approx([104 / 3, 106 / 3])


def test_static_embedding_averages_real_tokens():
    model = MODELS.get("static_embedding")(vocab_size=4, dim=2)
    with torch.no_grad():
        model.bag.weight.copy_(torch.tensor([[9.0, 9.0], [1.0, 0.0], [3.0, 2.0], [5.0, 5.0]]))
    ids = torch.tensor([[1, 2, 3, 0], [3, 0, 0, 0]])
    out = model(ids, attention_mask=torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]))
    assert out.tolist() == [[2.0, 1.0], [5.0, 5.0]]  # token 3 in row 0 is masked out
    assert model(ids[:1, :2]).tolist() == [[2.0, 1.0]]  # no mask: padding id 0 is still skipped
    unit = MODELS.get("static_embedding")(vocab_size=4, dim=2, normalize=True)
    assert torch.allclose(unit(ids).norm(dim=-1), torch.ones(2))
    with pytest.raises(ValidationError):
        MODELS.get("static_embedding")(vocab_size=4, dim=0)


def test_mean_pool_encoder_matches_hand_pooling(make_bert):
    bert = make_bert(30, hidden=32, layers=2, encoder_only=True).eval()
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    emb = MeanPoolEncoder(bert, normalize=True)(ids, attention_mask=mask)
    expected = torch.stack([hidden[0].mean(0), hidden[1, :3].mean(0)])
    assert torch.allclose(emb, F.normalize(expected, dim=-1), atol=1e-5)


def test_static_student_learns_a_bert_teacher_embedding_space(make_bert, sentiment, toy_tokenizer):
    texts, _ = sentiment(160, seed=2)
    enc = encode(toy_tokenizer, texts)
    vocab = toy_tokenizer.get_vocab_size()
    teacher = MeanPoolEncoder(make_bert(vocab, hidden=32, layers=2, encoder_only=True))
    student = MODELS.get("static_embedding")(vocab_size=vocab, dim=16)
    loss = LOSSES.get("embedding_distill")(mse_weight=1.0, cosine_weight=1.0, student_dim=16, teacher_dim=32)
    distiller = Distiller(student, teacher, {"embed": loss})
    opt = torch.optim.Adam(distiller.trainable_parameters(), lr=2e-2)

    held_out = encode(toy_tokenizer, sentiment(64, seed=5)[0])

    def explained() -> float:
        """R^2 of projected student embeddings against the teacher's on unseen sentences: a
        constant prediction (the teacher's mean embedding) scores 0, a perfect copy 1."""
        with torch.no_grad():
            s, t = loss.projection(student(**held_out)), teacher(**held_out)
            return 1 - ((s - t).pow(2).sum() / (t - t.mean(0)).pow(2).sum()).item()

    before = explained()
    for epoch in range(30):
        for i in range(0, len(texts), 32):
            out = distiller({k: v[i:i + 32] for k, v in enc.items()})
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
    after = explained()
    assert before < 0 and after > 0.5, (before, after)
