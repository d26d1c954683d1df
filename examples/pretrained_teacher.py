"""docs/models.md, "Pre-trained CIFAR-10 teachers": akamaster's ResNet-56 as a distil teacher.

Needs the weights in ../shared/models/cifar10_resnet_akamaster (or $DISTIL_AKAMASTER_DIR), and
reads 256 images of the shared JPEG CIFAR-10 test set (../shared/data/cifar10_jpeg) when present.
Prints the teacher's size, that the exported safetensors file rebuilds the same network, and its
accuracy on those images.
"""

import os
import tempfile
from pathlib import Path

import torch

os.chdir(tempfile.mkdtemp(prefix="distil-example-"))  # teachers/ goes to a scratch folder

# [start:pretrained]
from distil.models.pretrained import load_pretrained, load_akamaster, export_safetensors
teacher = load_pretrained("akamaster_resnet56")        # or load_akamaster("path/to/resnet56-4bfd9763.th")
export_safetensors("akamaster_resnet56", "teachers/resnet56.safetensors")  # for a recipe's checkpoint:
# [end:pretrained]

from distil.checkpoint import load_weights  # noqa: E402
from distil.models.base import MODELS  # noqa: E402

print(f"resnet56: {sum(p.numel() for p in teacher.parameters()):,} parameters")
rebuilt = load_weights(MODELS.get("resnet56")(num_classes=10), "teachers/resnet56.safetensors").eval()
probe = torch.randn(4, 3, 32, 32)
with torch.no_grad():
    print("safetensors export rebuilds it:", torch.equal(rebuilt(probe), teacher(probe)))

jpeg = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpeg"
if jpeg.is_dir():
    from distil.data.cifar import cifar10_jpeg

    test = cifar10_jpeg(jpeg, augment=False, normalize="imagenet").test  # these weights expect ImageNet statistics
    x = torch.stack([test[i][0] for i in range(256)])
    y = torch.tensor([int(test[i][1]) for i in range(256)])
    with torch.no_grad():
        print(f"accuracy on 256 JPEG CIFAR-10 test images: {(teacher(x).argmax(1) == y).float().mean():.1%}")
