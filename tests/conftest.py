"""Shared test set-up: deterministic, single-threaded torch so tests are reproducible on 2 cores."""

import pathlib

import pytest
import torch

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    torch.set_num_threads(1)


@pytest.fixture
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}")
    return SHARED


import sys  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent / "core"))  # tests/core/helpers.py
