#!/usr/bin/env bash
# Ship a new world64 generator and rebuild everything that stands on it, with each artifact's own
# --ship command (which rewrites that artifact's model card):
#
#   bash scripts/rebuild_world64.sh GENERATOR.pt [WORK_DIR]       # e.g. runs/gpu-adopt/generator.pt
#
# Stages, in order, each stamped in WORK_DIR (default runs/rebuild) so that a rerun resumes after
# the last finished one (and the trainers inside resume from their own checkpoints):
#   generator   copy into facelab/weights/world64.pt, record its sha256 in the manifest
#   label, h    render 12 000 faces, label them with the teacher labelers, retrain H (6 epochs)
#   boundaries  InterFaceGAN boundaries in W and Z on 12 000 latents, labelled by the new H
#   mapper      the Latent-to-Latent mapper, 2000 steps through the new G and H
#   encoder     the e4e-style encoder, ENCODER_MINUTES of training (default 60), then its evaluation
#   evaluate    the world's own card (n = 1000) and docs/world64's figures
# then re-execute the notebooks (`make notebooks`) and reread their "Reading the verdicts" cells:
# the prose describes this run's numbers. On a 2-core CPU the whole rebuild took about 75 minutes
# for world v2 (2026-12-04), with the encoder trained beside the other stages at one thread each.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
gen=${1:?usage: rebuild_world64.sh GENERATOR.pt [WORK_DIR]}
work=${2:-runs/rebuild}
PY=${PY:-.venv/bin/python}
mkdir -p "$work"

stage() {  # stage NAME COMMAND...: run COMMAND unless NAME is stamped
  local name=$1; shift
  if [ -e "$work/.done-$name" ]; then echo "$name: done, skipped"; return; fi
  echo "== $name: $*"
  "$@"
  touch "$work/.done-$name"
}

stage generator "$PY" -c "import sys; from facelab.hub import ship_generator; \
print(ship_generator(sys.argv[1], 'world64', card='world64.md', \
description=sys.argv[2]))" "$gen" "${DESCRIPTION:-world64, rebuilt by scripts/rebuild_world64.sh}"
stage label "$PY" -m facelab.train.regressor label --out "$work/regressor" --n 12000
stage h "$PY" -m facelab.train.regressor fit --out "$work/regressor" --epochs 6 --val 2000
stage boundaries "$PY" -m facelab.train.boundaries --n 12000 --spaces w,z --labeler H --ratio 0.02 \
  --rescore-n 64 --out facelab/weights/boundaries_world64.pt --work "$work/boundaries" --ship
stage mapper "$PY" -m facelab.train.mapper --out "$work/mapper" --steps 2000 --batch-size 8 --lr 3e-4 --ship
stage encoder-train "$PY" -m facelab.train.encoder --world world64 --out "$work/encoder" \
  --minutes "${ENCODER_MINUTES:-60}"
stage encoder "$PY" -m facelab.train.encoder --world world64 --out "$work/encoder" --steps 0 --ship
stage evaluate "$PY" -m facelab.train.evaluate world64 --n 1000 --figures docs/world64
echo "rebuilt; now: make notebooks, reread each notebook's verdicts, and commit"
