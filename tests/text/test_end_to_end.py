"""CPU end-to-end runs: BERT -> BiLSTM on an augmented transfer set (Tang et al. 2019), and the
TinyBERT / MiniLM layer-wise terms through the Distiller's taps on a shallower, narrower student."""

import pytest
import torch
from torch.utils.data import DataLoader

from distil.distiller import Distiller, Term
from distil.losses import LOSSES
from distil.models.base import MODELS
from distil.text import TextDataset, augment, encode, predict, transformer_layers


def _train(distiller: Distiller, loader, epochs: int, lr: float) -> None:
    opt = torch.optim.Adam(distiller.trainable_parameters(), lr=lr)
    for epoch in range(epochs):
        distiller.set_epoch(epoch)
        for batch in loader:
            out = distiller(batch)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()


def _agreement(student, teacher_logits, inputs) -> float:
    return (predict(student, inputs).argmax(-1) == teacher_logits.argmax(-1)).float().mean().item()


def test_bert_to_bilstm_on_augmented_transfer_set(make_bert, sentiment, toy_tokenizer):
    texts, labels = sentiment(240, seed=0)
    test_texts, test_labels = sentiment(120, seed=7)
    vocab = toy_tokenizer.get_vocab_size()

    # 1. Fine-tune a tiny BERT teacher on the labelled set with the same Distiller (no teacher, CE only).
    teacher = make_bert(vocab, hidden=32, layers=2, heads=2)
    train = TextDataset(encode(toy_tokenizer, texts), labels=torch.tensor(labels))
    _train(Distiller(teacher, None, {"ce": LOSSES.get("cross_entropy")()}), DataLoader(train, 16, shuffle=True), 4, 2e-3)
    test_inputs = encode(toy_tokenizer, test_texts)
    teacher_test = predict(teacher, test_inputs)
    assert (teacher_test.argmax(-1) == torch.tensor(test_labels)).float().mean() > 0.9

    # 2. Grow a transfer set from part of the labelled sentences; the teacher labels it with soft logits.
    source = texts[:80]
    transfer = augment(source, n_iter=10, seed=0)
    assert len(transfer) > 5 * len(source)

    # 3. Distil into the BiLSTM with logit MSE; the precomputed logits skip the teacher forward.
    def distil(sentences: list[str]) -> tuple[float, float, float]:
        torch.manual_seed(1)
        inputs = encode(toy_tokenizer, sentences)
        loader = DataLoader(TextDataset(inputs, teacher_logits=predict(teacher, inputs)), 32, shuffle=True)
        student = MODELS.get("bilstm_classifier")(vocab_size=vocab, num_classes=2, embed_dim=32, hidden=32, fc_dim=32)
        before = _agreement(student, teacher_test, test_inputs)
        _train(Distiller(student, teacher, {"mse": LOSSES.get("logit_mse")()}), loader, 6, 1e-2)
        mse = torch.nn.functional.mse_loss(predict(student, test_inputs), teacher_test).item()
        return before, _agreement(student, teacher_test, test_inputs), mse

    before, after, mse_augmented = distil(transfer)
    assert after > before + 0.2 and after > 0.95, (before, after)
    _, after_plain, mse_plain = distil(source)  # Tang et al.'s point: the augmented set transfers more
    assert mse_augmented < 0.5 * mse_plain, (mse_augmented, mse_plain)


def test_tinybert_and_minilm_terms_through_taps(make_bert, sentiment, toy_tokenizer):
    vocab = toy_tokenizer.get_vocab_size()
    teacher = make_bert(vocab, hidden=64, layers=2, heads=4)  # deeper and wider than the student
    student = make_bert(vocab, hidden=32, layers=1, heads=2)
    with torch.no_grad():  # BERT's 0.02-std init gives near-uniform attention: make the teacher's peaky
        for name in transformer_layers(teacher, "query") + transformer_layers(teacher, "key"):
            teacher.get_submodule(name).weight.normal_(0, 0.2)
    s_qk = transformer_layers(student, "query") + transformer_layers(student, "key")
    t_qk = transformer_layers(teacher, "query") + transformer_layers(teacher, "key")
    last = lambda m: [transformer_layers(m, w)[-1] for w in ("query", "key", "value")]  # noqa: E731
    terms = {
        "embd": Term(LOSSES.get("tinybert_embedding")(), student_layers=transformer_layers(student, "embeddings"),
                     teacher_layers=transformer_layers(teacher, "embeddings"), end_epoch=3),
        "hidn": Term(LOSSES.get("tinybert_hidden")(mapping="uniform"), student_layers=transformer_layers(student, "hidden"),
                     teacher_layers=transformer_layers(teacher, "hidden"), end_epoch=3),
        "attn": Term(LOSSES.get("tinybert_attention")(heads=2), student_layers=s_qk, teacher_layers=t_qk, end_epoch=3),
        "minilm": Term(LOSSES.get("minilm")(heads=2), student_layers=last(student), teacher_layers=last(teacher),
                       end_epoch=3),
        "pred": Term(LOSSES.get("tinybert_prediction")(), start_epoch=3),
    }
    distiller = Distiller(student, teacher, terms)
    texts, _ = sentiment(64, seed=3)
    loader = DataLoader(TextDataset(encode(toy_tokenizer, texts)), 16)
    distiller.setup(next(iter(loader)))
    assert distiller.losses["hidn"].projection.weight.shape == (64, 32)
    assert distiller.losses["embd"].projection.weight.shape == (64, 32)
    n_params = sum(p.numel() for p in distiller.trainable_parameters())
    assert n_params == sum(p.numel() for p in student.parameters()) + 2 * (64 * 32 + 64)

    def stage1() -> dict:
        distiller.set_epoch(0)
        with torch.no_grad():
            return {k: distiller(next(iter(loader)))[k].item() for k in ("embd", "hidn", "attn", "minilm")}

    first = stage1()
    _train(distiller, loader, 3, 3e-3)
    last_ = stage1()
    assert all(last_[k] < 0.9 * first[k] for k in first), (first, last_)
    assert last_["hidn"] < 0.5 * first["hidn"]
    distiller.set_epoch(3)
    out = distiller(next(iter(loader)))
    assert set(out) == {"pred", "embd", "hidn", "attn", "minilm", "loss", "output", "teacher_output"}
    assert all(out[k].item() == 0 for k in ("embd", "hidn", "attn", "minilm"))  # inactive terms log zero
    assert out["loss"].item() == pytest.approx(out["pred"].item())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in teacher.parameters())
