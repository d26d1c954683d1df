import pytest
import torch

from distil.errors import ConfigError
from distil.taps import capture
from distil.text import transformer_layers


def test_bert_layer_names_are_found_and_tappable(make_bert):
    model = make_bert(30, hidden=16, layers=3, heads=2)
    assert transformer_layers(model, "hidden") == [f"bert.encoder.layer.{i}" for i in range(3)]
    assert transformer_layers(model, "embeddings") == ["bert.embeddings"]
    assert transformer_layers(model, "key")[2] == "bert.encoder.layer.2.attention.self.key"
    names = transformer_layers(model, "hidden") + transformer_layers(model, "query")
    with capture(model, names) as feats:
        model(input_ids=torch.tensor([[2, 5, 6, 3]]))
    assert all(feats[n].shape == (1, 4, 16) for n in names)


def test_errors(make_bert):
    with pytest.raises(ConfigError, match="block list"):
        transformer_layers(torch.nn.Linear(2, 2), "hidden")
    with pytest.raises(ValueError, match="what"):
        transformer_layers(make_bert(30, hidden=16, layers=1), "ffn")
