"""The shared 64x64 Imagenette: its splits and labels as its README gives them, and the batched
path giving the per-sample path's images."""

import numpy as np
import pytest
import torch

from conftest import SHARED
from distil.data.base import DATASETS
from distil.errors import DistilError

TEST_COUNTS = [387, 395, 357, 386, 409, 394, 389, 419, 399, 390]  # ../shared/data/imagenette64_jpeg/README.md


@pytest.fixture(scope="module")
def bundle():
    pytest.importorskip("PIL")
    root = SHARED / "data" / "imagenette64_jpeg"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return DATASETS.get("imagenette64")(root=str(root), augment=False)


def test_splits_and_labels_match_the_readme(bundle):
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8522, 947, 3925)  # 9,469 = 8,522 + 947
    assert bundle.input_shape == (3, 64, 64) and bundle.num_outputs == 10
    labels = np.array([bundle.test.labels[i] for i in bundle.test.indices])
    assert np.bincount(labels, minlength=10).tolist() == TEST_COUNTS
    x, y = bundle.test[0]
    assert x.shape == (3, 64, 64) and 0 <= y < 10
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)  # ImageNet statistics by default
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    raw = x * std + mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_batched_path_gives_the_per_sample_images(bundle):
    gather = bundle.val.batch_gatherer()
    x, y = gather(torch.tensor([0, 5, 9]))
    for row, i in enumerate((0, 5, 9)):
        xi, yi = bundle.val[i]
        assert torch.allclose(x[row], xi, atol=1e-6) and int(y[row]) == yi


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(DistilError, match="Imagenette file not found"):
        DATASETS.get("imagenette64")(root=str(tmp_path))
