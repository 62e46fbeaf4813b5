"""A discriminator on frozen pretrained face features ("projected" discriminator).

Sauer, Chitta, Müller, Geiger. "Projected GANs Converge Faster", NeurIPS 2021: instead of learning
a discriminator from pixels, project real and generated images into the feature pyramid of a frozen
pretrained network, mix the channels with a fixed random 1x1 convolution (their "CCM"), and train
one small discriminator per scale on those features. Kumari, Zhang, Shechtman, Zhu. "Ensembling
Off-the-shelf Models for GAN Training", CVPR 2022 ("vision-aided GAN") add such a discriminator next
to the usual one instead of replacing it; ``facelab.train.gan`` offers both (``--disc projected`` /
``--disc both``).

The frozen network here is MTCNN's ONet (facenet-pytorch's pretrained weights, MIT): the only
pretrained *face* network small enough to run inside every CPU training step (about 9 MFLOP per
64 px face). It is deliberately not the dlib ResNet, because facelab judges worlds in the dlib
identity space (``facelab.train.evaluate``): a generator trained through a network must not be
judged by the same one. Its four feature maps on a 64 px face:

    [N, 3, 64, 64] -> conv1/pool1 [N, 32, 31, 31] -> conv2/pool2 [N, 64, 14, 14]
                   -> conv3/pool3 [N, 64, 6, 6]   -> conv4 [N, 128, 5, 5]

ONet's convolutions are applied to the whole image at its own resolution (ONet itself sees 48 px
crops; its layers are fully convolutional up to conv4), so no detail is thrown away by resizing.
Not implemented from the paper: cross-scale mixing (CSM) and differentiable augmentation (with an
endless stream of teacher faces there is no dataset to overfit).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

FEATURE_CHANNELS = (32, 64, 64, 128)


class ONetPyramid(nn.Module):
    """MTCNN ONet's convolutional stages, frozen: images [N, 3, H, W] in [-1, 1] -> 4 feature maps."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        from facenet_pytorch.models.mtcnn import ONet

        onet = ONet(pretrained=pretrained)
        self.stages = nn.ModuleList([
            nn.Sequential(onet.conv1, onet.prelu1, onet.pool1),
            nn.Sequential(onet.conv2, onet.prelu2, onet.pool2),
            nn.Sequential(onet.conv3, onet.prelu3, onet.pool3),
            nn.Sequential(onet.conv4, onet.prelu4),
        ])
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # always frozen, always in eval mode
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images * (127.5 / 128.0)  # ONet was trained on (pixel - 127.5) / 128
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class ScaleHead(nn.Module):
    """A small spectrally normalised discriminator on one feature map: [N, C, S, S] -> logits [N, P]."""

    def __init__(self, in_channels: int, size: int, *, width: int = 64):
        super().__init__()
        layers = [spectral_norm(nn.Conv2d(in_channels, width, 3, padding=1)), nn.LeakyReLU(0.2)]
        while size > 8:  # down to at most 8x8 patches
            layers += [spectral_norm(nn.Conv2d(width, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            size //= 2
        layers.append(spectral_norm(nn.Conv2d(width, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)  # [N, patches]


class ProjectedDiscriminator(nn.Module):
    """Frozen ONet pyramid -> fixed random channel mixing -> one trainable head per scale.

    images [N, 3, R, R] in [-1, 1] (resized to 64 px) -> patch logits [N, P] of all scales.
    """

    def __init__(self, *, width: int = 64, mix_channels: int = 64, pretrained: bool = True, seed: int = 0):
        super().__init__()
        self.features = ONetPyramid(pretrained=pretrained)
        g = torch.Generator().manual_seed(seed)
        sizes = [s.shape[-1] for s in self.features(torch.zeros(1, 3, 64, 64))]
        # Fixed random 1x1 "cross-channel mixing" (CCM), Kaiming-uniform as in the paper; buffers,
        # so they are saved with the state dict but never trained.
        for i, c in enumerate(FEATURE_CHANNELS):
            bound = (6.0 / c) ** 0.5
            self.register_buffer(f"mix{i}", (torch.rand(mix_channels, c, 1, 1, generator=g) * 2 - 1) * bound)
        self.heads = nn.ModuleList(ScaleHead(mix_channels, s, width=width) for s in sizes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {list(images.shape)}")
        if images.shape[-1] != 64:
            images = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        feats = self.features(images)
        return torch.cat([head(F.conv2d(f, getattr(self, f"mix{i}")))
                          for i, (f, head) in enumerate(zip(feats, self.heads))], dim=1)  # [N, P]

    def requires_grad_(self, requires_grad: bool = True):
        """Only the heads ever train; the ONet pyramid stays frozen whatever the caller asks."""
        self.heads.requires_grad_(requires_grad)
        return self

    def trainable_parameters(self):
        return list(self.heads.parameters())
