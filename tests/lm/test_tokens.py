"""The causal shift, token weights and padding helpers."""

import pytest
import torch

from distil.lm.tokens import pad_batch, shift_for_causal_lm, token_mean, token_weights


def test_shift_aligns_position_t_with_token_t_plus_1():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    hidden = torch.randn(2, 4, 5)
    labels = torch.tensor([[10, 11, 12, 13], [20, 21, 22, -100]])
    new_labels, new_logits, new_hidden = shift_for_causal_lm(labels, logits, hidden)
    assert new_labels.tolist() == [[11, 12, 13], [21, 22, -100]]
    assert torch.equal(new_logits, logits[:, :3]) and torch.equal(new_hidden, hidden[:, :3])
    assert shift_for_causal_lm(None, logits)[0] is None


def test_shift_rejects_flat_or_mismatched_inputs():
    with pytest.raises(ValueError, match=r"\(B, T, \.\.\.\)"):
        shift_for_causal_lm(torch.zeros(4, dtype=torch.long), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="labels of shape"):
        shift_for_causal_lm(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 4, 3))


def test_token_weights_and_mean():
    labels = torch.tensor([[1, -100, 3], [-100, -100, 2]])
    w = token_weights(labels, labels.shape, torch.tensor([1.0, 4.0]))
    assert w.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 4.0]
    per_token = torch.tensor([1.0, 100.0, 3.0, 100.0, 100.0, 2.0])
    assert token_mean(per_token, w).item() == pytest.approx((1 + 3 + 4 * 2) / 6)
    with pytest.raises(ValueError, match="sample_weight"):
        token_weights(labels, labels.shape, torch.ones(3))


def test_pad_batch_right_pads_and_masks():
    batch = pad_batch([
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "teacher_logits": torch.ones(3, 4)},
        {"input_ids": [8], "teacher_logits": torch.ones(1, 4)},
    ], pad_token_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["teacher_logits"].shape == (2, 3, 4) and batch["teacher_logits"][1, 1:].abs().sum() == 0
