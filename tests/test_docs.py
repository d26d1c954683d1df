"""The methods table documents every registered loss."""

import re
from pathlib import Path

from distil.losses import LOSSES

TABLE = Path(__file__).resolve().parents[1] / "docs" / "methods" / "README.md"


def test_every_registered_loss_is_in_the_methods_table():
    names = set(re.findall(r"`([a-z0-9_]+)`", TABLE.read_text()))
    missing = [n for n in LOSSES.names() if n not in names]
    assert not missing, f"add these losses to docs/methods/README.md: {missing}"
