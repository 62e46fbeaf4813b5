"""The projected discriminator (facelab/nets/projected.py): frozen pretrained features, trainable heads."""
from __future__ import annotations

import torch

from facelab.nets.projected import FEATURE_CHANNELS, ONetPyramid, ProjectedDiscriminator


def test_the_onet_pyramid_has_four_scales_and_matches_onets_own_layers():
    pyr = ONetPyramid()
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    feats = pyr(x)
    assert [f.shape[1] for f in feats] == list(FEATURE_CHANNELS)
    from facenet_pytorch.models.mtcnn import ONet
    onet = ONet(pretrained=True).eval()
    y = x * (127.5 / 128.0)
    y = onet.pool1(onet.prelu1(onet.conv1(y)))
    torch.testing.assert_close(feats[0], y)  # the same pretrained weights, the same preprocessing


def test_only_the_heads_train_and_gradients_reach_the_image():
    torch.manual_seed(0)
    D = ProjectedDiscriminator().train()
    D.requires_grad_(True)
    assert all(not p.requires_grad for p in D.features.parameters())
    assert not D.features.training  # frozen in eval mode, whatever the caller asks
    img = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    logits = D(img)
    assert logits.ndim == 2 and logits.shape[0] == 2
    logits.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert all(p.grad is not None for p in D.trainable_parameters())
    assert all(p.grad is None for p in D.features.parameters())
    D.requires_grad_(False)
    assert not any(p.requires_grad for p in D.parameters())


def test_other_resolutions_are_resized_to_64_px():
    from facelab.imaging import resize

    D = ProjectedDiscriminator().eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        small, big = D(x), D(resize(x, 64))
    assert small.shape == big.shape and torch.allclose(small, big, atol=1e-5)  # the same as resizing first
    assert not torch.allclose(small, D(resize(x.flip(-1), 64)), atol=1e-3)  # and it does look at the image
