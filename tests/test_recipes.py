"""The recipe comparison (facelab/train/recipes.py): equal CPU budgets from one start, judged by snapshots."""
from __future__ import annotations

import torch

from facelab.train import recipes
from facelab.train.gan import CHECKPOINT, TrainConfig, train


def test_recipes_start_alike_keep_snapshots_resume_to_their_budget_and_are_reported(tmp_path):
    start = tmp_path / "start"
    train(start, TrainConfig(preset="tiny", batch=4, snap_kimg=1000.0, kimg=1000.0), device="cpu",
          max_steps=2, progress=False)
    root = tmp_path / "recipes"
    recipes.run(["b-projected"], cpu_minutes=0.02, start=start / CHECKPOINT, root=root, snap_kimg=0.004,
                progress=False)
    ckpt = torch.load(root / "b-projected" / CHECKPOINT, map_location="cpu", weights_only=True)
    assert ckpt["train_config"]["disc"] == "projected" and ckpt["state"]["step"] > 2  # warm-started at step 2
    used = ckpt["state"]["cpu_seconds"]
    recipes.run(["b-projected"], cpu_minutes=0.001, start=start / CHECKPOINT, root=root, progress=False)
    assert torch.load(root / "b-projected" / CHECKPOINT, weights_only=True)["state"]["cpu_seconds"] == used  # spent
    snaps = sorted((root / "b-projected" / "snapshots").glob("generator-*.pt"))
    assert snaps
    results = recipes.evaluate(root=root, start=start / CHECKPOINT, n=40, boot=3)
    assert {"start/start", f"b-projected/{snaps[-1].stem}"} <= set(results)
    assert 0 <= results["start/start"]["world"]["recall"] <= 1
    md = recipes.report(results, figure=tmp_path / "curve.png")
    assert "| b-projected:" in md and "reference: a second teacher set" in md and (tmp_path / "curve.png").is_file()
