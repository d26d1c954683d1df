"""Small text classifiers to distil BERT-sized teachers into.

BiLSTM: Tang et al., "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks",
arXiv:1903.12136, 2019 (sec. 3.2: one BiLSTM layer, both final states concatenated, a ReLU
hidden layer, then the classes). TextCNN: Kim, "Convolutional Neural Networks for Sentence
Classification", EMNLP 2014 (filter widths 3/4/5, 100 maps each, max-over-time pooling, dropout).

Both take token ids (B, T) and an optional attention mask like Hugging Face models, so the same
dict batches feed teacher and student. They assume right padding; no mask means every token counts.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from distil.models.base import MODELS
from distil.types import Fraction, PositiveInt, validated


DENSE = 0.6  # share of real tokens above which padded steps cost less than packing saves


def _mostly_real(x: Tensor, lengths: Tensor) -> bool:
    """Whether to run the padded path: torch.export (ONNX) and torch.compile cannot trace packed
    sequences, and on a CPU the packed LSTM's backward costs about twice the padded one's once most
    of a batch's tokens are real (bench/RESULTS.md, "BiLSTM student"), so packing pays only for
    batches of very uneven lengths."""
    return x.device.type == "cpu" and bool(lengths.sum() >= DENSE * lengths.numel() * x.shape[1])


def _lengths(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Real-token counts (B,), at least 1 so an all-padding row still yields a prediction."""
    if attention_mask is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1], dtype=torch.long)
    return attention_mask.long().sum(1).clamp_min(1).cpu()


class BiLSTMClassifier(nn.Module):
    """embedding -> BiLSTM -> [h_forward; h_backward] -> Linear-ReLU -> `head` (Tang et al. 2019)."""

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int, hidden: int, fc_dim: int,
                 dropout: float, padding_idx: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, fc_dim), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(fc_dim, num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **_) -> Tensor:
        x = self.embedding(input_ids)  # (B, T, E)
        lengths = _lengths(input_ids, attention_mask)
        if torch.compiler.is_compiling() or _mostly_real(x, lengths):
            final = self._final_states_padded(x, lengths.to(x.device))
        else:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)  # h: (2, B, H), the last real step of each direction
            final = torch.cat([h[0], h[1]], dim=-1)
        return self.head(self.fc(final))  # (B, num_classes)

    def _final_states_padded(self, x: Tensor, lengths: Tensor) -> Tensor:
        """[h_forward; h_backward] as the packed call gives them, from padded tensors alone: each
        direction runs as a one-way LSTM with its own weights, the backward one over each row's
        real tokens reversed, and both are read at the row's last real step. Same numbers, one
        pass per direction as with packing, but every row runs to the batch's longest."""
        steps = torch.arange(x.shape[1], device=x.device)
        backwards = (lengths[:, None] - 1 - steps).clamp_min(0)  # (B, T): real tokens reversed, then token 0 again
        reversed_x = x.gather(1, backwards[:, :, None].expand_as(x))
        last = (lengths - 1)[:, None, None].expand(-1, 1, self.lstm.hidden_size)
        one_way = nn.LSTM(self.lstm.input_size, self.lstm.hidden_size, batch_first=True, device="meta")
        weights = dict(self.lstm.named_parameters())
        names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        finals = []
        for suffix, inputs in (("", x), ("_reverse", reversed_x)):
            outputs, _ = torch.func.functional_call(one_way, {n: weights[n + suffix] for n in names}, (inputs,))
            finals.append(outputs.gather(1, last)[:, 0])  # (B, H)
        return torch.cat(finals, dim=-1)


class TextCNN(nn.Module):
    """embedding -> parallel Conv1d of several widths -> ReLU -> masked max over time -> `head` (Kim 2014)."""

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int, widths: Sequence[int], maps: int,
                 dropout: float, padding_idx: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, maps, w) for w in widths)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(maps * len(widths), num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **_) -> Tensor:
        mask = torch.ones_like(input_ids, dtype=torch.float32) if attention_mask is None else attention_mask.float()
        x = (self.embedding(input_ids) * mask[..., None]).transpose(1, 2)  # (B, E, T), padding zeroed
        pooled = []
        for conv in self.convs:
            width = conv.kernel_size[0]
            h = torch.relu(conv(nn.functional.pad(x, (0, width - 1))))  # (B, maps, T): window starting at t
            starts = mask.clone()
            starts[:, 0] = 1.0  # a window starting at the first token always counts
            pooled.append(h.masked_fill(starts[:, None, :] == 0, float("-inf")).amax(-1))  # (B, maps)
        return self.head(self.dropout(torch.cat(pooled, dim=-1)))  # (B, num_classes)


@MODELS.register
@validated
def bilstm_classifier(
    vocab_size: PositiveInt,
    num_classes: PositiveInt,
    embed_dim: PositiveInt = 300,
    hidden: PositiveInt = 150,
    fc_dim: PositiveInt = 200,
    dropout: Fraction = 0.0,
    padding_idx: int = 0,
) -> nn.Module:
    """Tang et al.'s BiLSTM student; defaults are the paper's (300-d embeddings, 150 units, 200-d ReLU)."""
    return BiLSTMClassifier(vocab_size, num_classes, embed_dim, hidden, fc_dim, dropout, padding_idx)


@MODELS.register
@validated
def text_cnn(
    vocab_size: PositiveInt,
    num_classes: PositiveInt,
    embed_dim: PositiveInt = 300,
    widths: Sequence[PositiveInt] = (3, 4, 5),
    maps: PositiveInt = 100,
    dropout: Fraction = 0.5,
    padding_idx: int = 0,
) -> nn.Module:
    """Kim's CNN-rand sentence classifier; defaults are the paper's (widths 3/4/5, 100 maps, dropout 0.5)."""
    return TextCNN(vocab_size, num_classes, embed_dim, widths, maps, dropout, padding_idx)
