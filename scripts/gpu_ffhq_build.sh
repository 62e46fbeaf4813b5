#!/usr/bin/env bash
# How long does `python -m facelab.train.build ffhq` take on a GPU, stage by stage (issue #18)?
#
#   here, once:  bash scripts/gpu_world.sh prepare         # facenet-pytorch for the labelers -> .gpu/
#   there:       bash scripts/gpu_ffhq_build.sh            # device tool: carry [".gpu"]; results in $OUT
#
# `gpu_world.sh session MINUTES` runs it after the world's training in the same device call (each call
# returns at most 8 files; this writes 3); at the default counts it should take a few minutes of an
# H100 (not yet measured).
#
# NVIDIA's FFHQ network cannot be downloaded on the device, so this builds a world on the same
# architecture (config-f, 1024 px) with random weights (seed 0): rendering, the labelers'
# detection, the boundaries' scoring and the mapper's and encoder's steps do the work the trained
# network's build does. Random faces are not faces, though: MTCNN finds none, so the label stage
# runs the detector but not the attribute labelers behind it (its time is a lower bound; their
# packages, which the device lacks, are not needed: label_images asks for them at the first face), and there
# is nothing to train H on. H trains on stored 64 px faces, so its time does not depend on the
# world; the bench borrows world64's shipped H (facelab/weights/attribute_regressor.pt) for the
# stages after it, marks `h` done, and runs `boundaries`, `mapper`, `encoder` and `cards` with it.
#
# Each stage runs at small counts (LABEL_N, BOUNDARY_N, MAPPER_STEPS, ENCODER_STEPS below); build.json
# holds each stage's wall time. The summary divides it by the count, fixed costs (loading, the
# mapper's and encoder's evaluations) included, so "at the build's counts" over-estimates: an upper
# bound, except for the label stage's missing labelers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-runs/ffhq-build-out}
home=${HOME_DIR:-runs/ffhq-build}
world=$home/worlds/ffhq-random
rm -rf "$world"  # a warm machine keeps ignored folders: a second run must time every stage again
mkdir -p "$out" "$home"
export PYTHONPATH="$PWD/.gpu/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
py=${PYTHON:-python3}
LABEL_N=${LABEL_N:-1000} BOUNDARY_N=${BOUNDARY_N:-4000} MAPPER_STEPS=${MAPPER_STEPS:-100} ENCODER_STEPS=${ENCODER_STEPS:-100}
nvidia-smi -L 2>/dev/null || true

"$py" - "$home/ffhq-random.pt" "${PRESET:-ffhq-config-f}" <<'PY'
import sys, torch, facelab
from facelab.hub import export_generator
torch.manual_seed(0)
export_generator(facelab.Generator(facelab.get_config(sys.argv[2])), sys.argv[1],
                 meta={"source": f"random weights (seed 0), {sys.argv[2]}: timing only"})
PY
"$py" -m facelab.train.build ffhq-random --generator "$home/ffhq-random.pt" --home "$home" \
  --n-samples "$LABEL_N" --only label 2>&1 | tee "$out/build.log"
cp facelab/weights/attribute_regressor.pt "$world/regressor.pt"  # world64's H stands in (see above)
touch "$world/.done-h"
"$py" -m facelab.train.build ffhq-random --home "$home" --n-samples "$LABEL_N" --boundary-samples "$BOUNDARY_N" \
  --mapper-steps "$MAPPER_STEPS" --encoder-steps "$ENCODER_STEPS" --from boundaries 2>&1 | tee -a "$out/build.log"
cp "$world/build.json" "$out/"

"$py" - "$world/build.json" "$LABEL_N" "$BOUNDARY_N" "$MAPPER_STEPS" "$ENCODER_STEPS" <<'PY' | tee "$out/summary.md"
import json, sys
from facelab.train.build import MAPPER_STEPS
seconds = json.load(open(sys.argv[1]))["seconds"]
counts = dict(zip(("label", "boundaries", "mapper", "encoder"), map(int, sys.argv[2:6])))
# world64's faces and latents (its card's build command), the build's default mapper and encoder steps
full = {"label": 50_000, "boundaries": 100_000, "mapper": MAPPER_STEPS, "encoder": 3_000}
unit = {"label": "faces", "boundaries": "faces", "mapper": "steps", "encoder": "steps"}
print("| stage | measured at | seconds | at the build's counts | estimated minutes (upper bound) |")
print("|---|---|---|---|---|")
for stage, n in counts.items():
    s = seconds[stage]
    print(f"| {stage} | {n} {unit[stage]} | {s:.1f} | {full[stage]} {unit[stage]} | {s / n * full[stage] / 60:.1f} |")
PY
