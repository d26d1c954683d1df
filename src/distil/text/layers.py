"""Layer names of Hugging Face-style transformers, for the taps the text losses read.

Module names differ by architecture (`bert.encoder.layer.3`, `roberta.encoder.layer.3`,
`distilbert.transformer.layer.3.attention.q_lin`), and a Term lists names explicitly, so this finds
them from `named_modules()` instead of asking users to type them.
"""

from __future__ import annotations

from torch import nn

from distil.errors import ConfigError

_PROJECTIONS = {
    "query": (".query", ".q_proj", ".q_lin", ".q"),
    "key": (".key", ".k_proj", ".k_lin", ".k"),
    "value": (".value", ".v_proj", ".v_lin", ".v"),
}


def _blocks(model: nn.Module) -> list[str]:
    """Names of the encoder blocks: the children of the largest ModuleList called `layer`/`layers`."""
    lists = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and n.rsplit(".", 1)[-1] in ("layer", "layers", "h", "blocks")]
    if not lists:
        raise ConfigError(f"{type(model).__name__}: no transformer block list (a ModuleList named layer/layers) found")
    name, blocks = max(lists, key=lambda nm: len(nm[1]))
    return [f"{name}.{i}" for i in range(len(blocks))]


def transformer_layers(model: nn.Module, what: str) -> list[str]:
    """Tap names, bottom to top: what = "hidden" (block outputs), "embeddings" (the embedding
    module), "query", "key" or "value" (each block's self-attention projection)."""
    if what == "hidden":
        return _blocks(model)
    if what == "embeddings":
        hits = [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] == "embeddings"]
        if not hits:
            raise ConfigError(f"{type(model).__name__}: no module named 'embeddings' found")
        return hits[:1]
    if what not in _PROJECTIONS:
        raise ValueError(f"what: must be 'hidden', 'embeddings', 'query', 'key' or 'value', got {what!r}")
    names = [n for n, _ in model.named_modules()]
    out = []
    for block in _blocks(model):
        found = [n for n in names if n.startswith(block + ".") and n.endswith(_PROJECTIONS[what])
                 and "crossattention" not in n]
        if not found:
            raise ConfigError(f"{type(model).__name__}: no {what} projection under {block!r}")
        out.append(found[0])
    return out
