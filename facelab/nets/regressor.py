"""H: a small differentiable CNN that predicts the teacher's face attributes from a 64 px face.

The teacher labelers (:mod:`facelab.nets.attributes`) are accurate but slow, not differentiable and
need MTCNN to find the face. H is trained to imitate them on world faces
(``python -m facelab.train.regressor``), so InterFaceGAN can label 100k faces in minutes and the
Latent-to-Latent mapper can train through it. Its held-out agreement with the teacher is in
``facelab/weights/attribute_regressor.md``.

    H = fl.load_regressor()              # offline
    H(images)                            # [N, 3, 64, 64] in [-1, 1] -> [N, 7] in the attributes' units
    H.predict(images)                    # {"age": [N], "male": [N], ...}

Input: world-aligned faces, 64 px, [-1, 1] (other sizes are resized bilinearly). Output units are
the teacher's: ``age`` in years, ``male``/``smile``/``face_conf`` as probabilities (not clamped: H
is a regressor), ``yaw``/``mouth_width`` in eye distances, ``roll`` in degrees.
"""
from __future__ import annotations

from types import MappingProxyType

import torch
import torch.nn as nn
import torch.nn.functional as F

# H's outputs in column order, with their kind and unit: the teacher's labels
# (``facelab.nets.attributes.ATTRIBUTES``, which describes them in another order) that H learned to predict.
OUTPUTS = MappingProxyType({
    "age": {"kind": "value", "unit": "years"},
    "male": {"kind": "probability", "unit": "P(male)"},
    "smile": {"kind": "probability", "unit": "P(happy)"},
    "yaw": {"kind": "value", "unit": "eye distances"},
    "roll": {"kind": "value", "unit": "degrees"},
    "mouth_width": {"kind": "value", "unit": "eye distances"},
    "face_conf": {"kind": "probability", "unit": "MTCNN probability"},
})
MIRROR_SIGN = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0])  # how each label changes when the image is mirrored


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(),
        nn.AvgPool2d(2),
    )


INPUT_SIZE = 64  # H's input resolution; other sizes are resized by input_size


def input_size(images: torch.Tensor) -> torch.Tensor:
    """Images at H's input resolution, resized as H resizes them (bilinear, antialiased)."""
    if images.shape[-2:] == (INPUT_SIZE, INPUT_SIZE):
        return images
    return F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)


class AttributeRegressor(nn.Module):
    """64 px face -> attribute vector (order: ``OUTPUTS``): four conv blocks (64 -> 4 px), an MLP head.

    With ``width=16`` (channels 16, 32, 64, 128) it has about 0.5 M parameters and costs ~54 M
    multiply-adds per face.
    """

    def __init__(self, *, width: int = 16, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        k = len(OUTPUTS)
        self.width = width
        self.features = nn.Sequential(_block(3, width), _block(width, 2 * width), _block(2 * width, 4 * width),
                                      _block(4 * width, 8 * width))  # [N, 8w, 4, 4]
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(8 * width * 16, 128), nn.SiLU(),
                                  nn.Linear(128, k))
        self.register_buffer("mean", torch.zeros(k) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(k) if std is None else std.float().clone())
        self.names = tuple(OUTPUTS)

    def config(self) -> dict:
        return {"width": self.width, "attributes": list(self.names)}

    def normalised(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised predictions (the training target's scale), [N, K]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"H expects images [N, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
        return self.head(self.features(input_size(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalised(images) * self.std + self.mean

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self(images)
        return {a: y[:, j] for j, a in enumerate(self.names)}

    def index(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"H has no attribute {name!r}; it predicts {list(self.names)}")
        return self.names.index(name)


REGRESSOR_FORMAT = "facelab.regressor/1"  # files written by facelab.train.regressor, read by facelab.hub.load_regressor
