import pytest
import torch
from pydantic import ValidationError

from distil.models.base import MODELS
from distil.text import students  # noqa: F401  (registers the models)


@pytest.mark.parametrize("name", ["bilstm_classifier", "text_cnn"])
def test_shapes_padding_invariance_and_gradients(name):
    model = MODELS.get(name)(vocab_size=20, num_classes=3, embed_dim=8, dropout=0.0).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    mask = (ids != 0).long()
    out = model(ids, attention_mask=mask, token_type_ids=None)  # extra HF-style kwargs are ignored
    assert out.shape == (2, 3)
    alone = model(ids[:1, :3], attention_mask=mask[:1, :3])  # same sentence without padding
    assert torch.allclose(out[:1], alone, atol=1e-5)
    model(input_ids=ids, attention_mask=mask).sum().backward()
    assert model.embedding.weight.grad.abs().sum() > 0


def test_padding_changes_output_without_mask():
    model = MODELS.get("bilstm_classifier")(vocab_size=20, num_classes=2, embed_dim=8, hidden=8, fc_dim=8).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    assert not torch.allclose(model(ids), model(ids, attention_mask=(ids != 0).long()))


def test_text_cnn_handles_sentences_shorter_than_filters():
    model = MODELS.get("text_cnn")(vocab_size=10, num_classes=2, embed_dim=4, widths=[3, 5], maps=2)
    assert model(torch.tensor([[3]]), attention_mask=torch.tensor([[1]])).shape == (1, 2)


def test_bad_arguments():
    with pytest.raises(ValidationError):
        MODELS.get("bilstm_classifier")(vocab_size=0, num_classes=2)
    with pytest.raises(ValidationError):
        MODELS.get("text_cnn")(vocab_size=10, num_classes=2, dropout=1.5)


def test_the_bilstms_padded_and_packed_paths_give_the_same_outputs_and_gradients():
    from torch.nn.utils.rnn import pack_padded_sequence

    from distil.text.students import _mostly_real

    torch.manual_seed(0)
    model = MODELS.get("bilstm_classifier")(vocab_size=30, num_classes=3, embed_dim=8, hidden=6, fc_dim=8, dropout=0.0)
    ids = torch.randint(5, 30, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 7:], mask[3, 5:] = 0, 0  # 31 of 36 tokens real: the padded path
    lengths = mask.sum(1)
    assert _mostly_real(model.embedding(ids), lengths) and not _mostly_real(model.embedding(ids), torch.tensor([1, 1, 1, 9]))
    out = model(ids, attention_mask=mask)
    out.square().sum().backward()
    padded = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    _, (h, _) = model.lstm(pack_padded_sequence(model.embedding(ids), lengths, batch_first=True, enforce_sorted=False))
    packed = model.head(model.fc(torch.cat([h[0], h[1]], -1)))
    packed.square().sum().backward()
    torch.testing.assert_close(out, packed, atol=1e-6, rtol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(padded[name], p.grad, atol=1e-6, rtol=1e-5, msg=name)
