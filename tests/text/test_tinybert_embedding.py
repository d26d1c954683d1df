import pytest
import torch
from torch import nn

from distil.errors import ConfigError
from distil.losses import LOSSES
from distil.losses.text.tinybert_embedding import TinyBERTEmbedding, tinybert_embedding_loss


def test_hand_value():
    s = torch.tensor([[[1.0, 2.0]]])  # (B=1, T=1, d=2)
    t = torch.zeros(1, 1, 2)
    assert tinybert_embedding_loss(s, t).item() == pytest.approx((1 + 4) / 2)


def test_padding_does_not_count():
    s = torch.tensor([[[1.0, 1.0], [5.0, 5.0]]])  # second token is padding
    t = torch.zeros(1, 2, 2)
    mask = torch.tensor([[1, 0]])
    assert tinybert_embedding_loss(s, t, mask=mask.float()).item() == pytest.approx(1.0)
    loss = TinyBERTEmbedding()([s], [t], inputs={"input_ids": torch.zeros(1, 2), "attention_mask": mask})
    assert loss.item() == pytest.approx(1.0)


def test_projection_hand_value():
    proj = nn.Linear(1, 2)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[2.0], [3.0]]))
        proj.bias.zero_()
    s, t = torch.tensor([[[1.0]]]), torch.tensor([[[2.0, 0.0]]])  # P s = (2, 3)
    assert tinybert_embedding_loss(s, t, projection=proj).item() == pytest.approx((0 + 9) / 2)


def test_zero_when_equal_and_gradients():
    t = torch.randn(2, 3, 4)
    s = t.clone().requires_grad_(True)
    loss = TinyBERTEmbedding()([s], [t])
    assert loss.item() == 0.0
    s2 = torch.randn(2, 3, 4, requires_grad=True)
    TinyBERTEmbedding()([s2], [t]).backward()
    assert s2.grad.abs().sum() > 0 and t.grad is None


def test_setup_creates_trainable_projection_idempotently():
    loss = LOSSES.get("tinybert_embedding")()
    loss.setup([torch.Size([2, 5, 8])], [torch.Size([2, 5, 16])])
    proj = loss.projection
    assert isinstance(proj, nn.Linear) and (proj.in_features, proj.out_features) == (8, 16)
    loss.setup([torch.Size([2, 5, 8])], [torch.Size([2, 5, 16])])
    assert loss.projection is proj and len(list(loss.parameters())) == 2
    s = torch.randn(2, 5, 8, requires_grad=True)
    loss([s], [torch.randn(2, 5, 16)]).backward()
    assert proj.weight.grad is not None and s.grad is not None
    with pytest.raises(ConfigError, match="projection"):
        loss.setup([torch.Size([2, 5, 4])], [torch.Size([2, 5, 16])])


def test_equal_widths_need_no_projection():
    loss = TinyBERTEmbedding()
    loss.setup([torch.Size([2, 5, 8])], [torch.Size([2, 5, 8])])
    assert loss.projection is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        TinyBERTEmbedding()([torch.zeros(1, 2, 3)] * 2, [torch.zeros(1, 2, 3)])
    with pytest.raises(ValueError, match="call setup"):
        TinyBERTEmbedding()([torch.zeros(1, 2, 3)], [torch.zeros(1, 2, 4)])
    with pytest.raises(ConfigError, match="tapped"):
        TinyBERTEmbedding().setup([], [])
