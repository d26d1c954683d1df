"""docs/models.md, "CIFAR data": turn the CIFAR-100 binary archive into the .npz `cifar_npz` reads.

No download here: a miniature `cifar-100-binary.tar.gz` in the official record layout (coarse
label byte, fine label byte, 3072 pixel bytes: red plane, green, blue) is written first, with
known pixels. Prints the arrays' shapes, checks one image came through in (H, W, C) order, and
loads the result with `distil.data.cifar.cifar_npz`.
"""

import io
import os
import tarfile
import tempfile

import numpy as np

os.chdir(tempfile.mkdtemp(prefix="distil-example-"))  # the archive and data/ go to a scratch folder
rng = np.random.default_rng(0)
images = {"train": rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8), "test": rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)}
fine = {"train": np.arange(50) % 100, "test": np.arange(20) % 100}
with tarfile.open("cifar-100-binary.tar.gz", "w:gz") as tar:
    for split in ("train", "test"):
        records = np.concatenate([(fine[split] // 5)[:, None], fine[split][:, None], images[split].reshape(-1, 3072)], axis=1)
        payload = records.astype(np.uint8).tobytes()
        info = tarfile.TarInfo(f"cifar-100-binary/{split}.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
os.makedirs("data")

# [start:npz]
import tarfile
import numpy as np

with tarfile.open("cifar-100-binary.tar.gz") as tar:
    def read(split):
        raw = np.frombuffer(tar.extractfile(f"cifar-100-binary/{split}.bin").read(), np.uint8).reshape(-1, 3074)
        return raw[:, 2:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), raw[:, 1].astype(np.int64)
    x_train, y_train = read("train")
    x_test, y_test = read("test")
np.savez("data/cifar100.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
# [end:npz]

from distil.data.cifar import cifar_npz  # noqa: E402

print("x_train", x_train.shape, x_train.dtype, "y_train", y_train.shape, "x_test", x_test.shape)
print("first image unchanged:", np.array_equal(x_train[0], images["train"][0].transpose(1, 2, 0)),
      "labels unchanged:", np.array_equal(y_train, fine["train"]))
bundle = cifar_npz("data/cifar100.npz", val_fraction=0.2, num_classes=100)
print(f"cifar_npz: {len(bundle.train)} train, {len(bundle.val)} val, {len(bundle.test)} test images, "
      f"{bundle.num_outputs} classes")
