#!/usr/bin/env bash
# The groceries-voc numbers on a CPU-only machine (the reduced schedule the SSD and Fast R-CNN
# issues ask for when no GPU is lent). Usage, from the repository root, after `bash install.sh`:
#
#   bash bench/cpu_groceries.sh          # ~80 min on 2 cores: Fast R-CNN race, then the SSD
#
# 1. The Fast R-CNN race (bench/fast_rcnn.py): SSD, Fast R-CNN + RPN and Fast R-CNN + selective
#    search on EfficientNet-Lite0 at 224 px (the images' own size), 6 epochs, batch 32, the
#    trainer's default SGD schedule. Selective-search proposals come from PROPOSALS when that
#    file exists (bench/prepare_gpu.sh makes it with `detect proposals`), else are computed first.
# 2. SSD Lite0 at 224 px with the AdamW setting of the GPU run, EPOCHS epochs, then `detect val`
#    (SSD_ARGS: more `detect train` options; SKIP_RACE=1 runs this step alone).
# Logs and JSON go to OUT (bench/out/cpu, git-ignored). Data loading runs in the main process
# (--workers 0): with 224x224 JPEGs, worker processes cost more in transfers than they save.
set -eu
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/cpu}
EPOCHS=${EPOCHS:-20}
PROPOSALS=${PROPOSALS:-.gpu/groceries_ss_fast.npz}
PY=${PY:-.venv/bin/python}
DATA=datasets/groceries.yaml
mkdir -p "$OUT"
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }

if [ "${SKIP_RACE:-0}" != 1 ]; then
  prop=(); [ -f "$PROPOSALS" ] && prop=(--proposals "$PROPOSALS")
  $PY bench/fast_rcnn.py --device cpu --workers 0 --ss-workers 2 --imgsz 224 --epochs 6 --batch 32 \
    "${prop[@]}" --out "$OUT/fast_rcnn" 2>&1 | tee "$OUT/fast_rcnn.log"
  el "race done"
fi
RUN=$OUT/${SSD_NAME:-ssd_adamw_224}
rm -rf "$RUN"
$PY -m detect train --data $DATA --epochs "$EPOCHS" --batch 32 --imgsz 224 --workers 0 \
  --optimizer adamw --lr 0.001 --weight-decay 0.05 --eval-every 4 --out "$RUN" --device cpu \
  ${SSD_ARGS:-} --no-progress 2>&1 | tee "$RUN.log"
$PY -m detect val --weights "$RUN/best.pt" --data $DATA --split val --max-det 100 --json "$RUN/val.json" \
  --device cpu 2>&1 | tee "${RUN}_val.log"
el "ssd done"
