"""Do a pretrained face network's features carry the teacher's age better than H does? A linear probe.

    python scripts/probe_h_features.py [--labels runs/build/world64/labels] [--train 20000] [--val 2000]

H (``facelab/weights/attribute_regressor.md``) imitates the teacher's age at r 0.69 on its held-out
faces, short of issue #17's target, and fits its training faces no better: it is short of what it can
represent, not of data. If a frozen pretrained backbone already carried the teacher's age, H could
stand on it. This probe takes the dlib ResNet that facelab ships for identity
(``facelab/weights/dlib_resnet.md``), cuts the build's labelled world faces into its chips
(:func:`facelab.metrics.world_chips`), keeps its pooled 256-d features (the input of its last layer),
and fits a ridge regression from them to the teacher's labels on the first ``--train`` faces. It prints
Pearson r on the last ``--val`` faces (H's held-out split) and on the training faces, per attribute and
ridge strength, beside the shipped H's r on the same held-out faces.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from facelab.hub import load_identity, load_regressor
from facelab.metrics import world_chips
from facelab.nets.regressor import OUTPUTS
from facelab.train.regressor import SHIPPED, agreement, load_chunks, predict, to_float

PROBED = ("age", "male", "smile")


@torch.no_grad()
def pooled_features(images_u8: torch.Tensor, batch: int = 250) -> np.ndarray:
    """The dlib ResNet's pooled features [N, 256] (what its last linear layer sees) of uint8 world faces."""
    net = load_identity("dlib", device="cpu")
    seen = []
    hook = net.fc.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    try:
        for b in images_u8.split(batch):
            net(world_chips(to_float(b), net.input_size))
    finally:
        hook.remove()
    return torch.cat(seen).double().numpy()


def ridge_r(f: np.ndarray, t: np.ndarray, train: np.ndarray, val: np.ndarray, lam: float) -> tuple[float, float]:
    """(val r, train r) of a ridge regression fitted on ``train`` rows (features standardised on them)."""
    mu, sd = f[train].mean(0), f[train].std(0) + 1e-8
    z = np.hstack([(f - mu) / sd, np.ones((len(f), 1))])
    a = z[train]
    coef = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ t[train])
    return tuple(float(np.corrcoef(z[rows] @ coef, t[rows])[0, 1]) for rows in (val, train))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", type=Path, default=Path("runs/build/world64/labels"))
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--val", type=int, default=2000)
    p.add_argument("--ridge", default="1,100,1000", help="ridge strengths, comma-separated")
    args = p.parse_args(argv)
    images, labels = load_chunks(args.labels)
    rows = torch.cat([torch.arange(args.train), torch.arange(len(images) - args.val, len(images))])
    f, y = pooled_features(images[rows]), labels[rows].double().numpy()
    shipped = agreement(predict(load_regressor(SHIPPED), images[-args.val:]), labels[-args.val:])
    is_train = np.arange(len(rows)) < args.train
    print(f"dlib ResNet pooled features -> teacher labels, ridge; {args.train} training and {args.val} held-out faces")
    print("| attribute | ridge | held-out r | training r | shipped H, held-out r |\n|---|---|---|---|---|")
    for a in PROBED:
        t = y[:, list(OUTPUTS).index(a)]
        ok = ~np.isnan(t)
        for lam in (float(s) for s in args.ridge.split(",")):
            val_r, train_r = ridge_r(f, t, ok & is_train, ok & ~is_train, lam)
            print(f"| {a} | {lam:g} | {val_r:.3f} | {train_r:.3f} | {shipped[a]['r']:.3f} |")


if __name__ == "__main__":
    main()
