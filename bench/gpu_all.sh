#!/usr/bin/env bash
# Every GPU check and benchmark of the project in one call, for a lent GPU machine (the
# workplace's device tool) or any CUDA box. Usage, from the repository root:
#
#   MODE=smoke bash bench/gpu_all.sh   # ~1 min: GPU tests + a 1-epoch train + inference smoke
#   MODE=full  bash bench/gpu_all.sh   # ~9 min: shipped weights, groceries SSD, Fast R-CNN race,
#                                      #         GPU inference benchmark, xml2pkl on many cores
#   MODE=real  bash bench/gpu_all.sh   # ~9 min: groceries only, one training at a time (the
#                                      #         0.75 target and the Fast R-CNN numbers)
#   MODE=time5 bash bench/gpu_all.sh   # ~8 min: both detectors' defaults with --time 5 on
#                                      #         groceries, GPU tests, GPU inference (trained weights)
#   MODE=profile bash bench/gpu_all.sh # ~5 min: issue 14's GPU targets: bench/gpu_profile.py (inference
#                                      #         stage by stage; loader alone, step alone, both), the
#                                      #         inference race at 320x320 batch 256, the GPU tests
#                                      #         (needs only .whl; no groceries data)
#
# Inputs (git-ignored, carried to the device): .gpu/groceries-voc.tgz (an archive of
# ../shared/data/groceries-voc, benchmark only), .gpu/groceries.yaml, .gpu/groceries_ss_fast.npz
# (selective-search proposals computed on the CPU with `detect proposals`), .gpu/site (a
# transport copy of the EfficientNet-Lite0 ImageNet weights package, conv weights stored fp16 to
# fit the upload limit) and .whl/ (wheels the device image lacks). Results go to $OUT (or
# bench/out/gpu). CPU-only machines: `CUDA_VISIBLE_DEVICES= MODE=smoke` still runs end to end.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/bench/out/gpu}  # what comes back: results.tgz (logs, JSON, CSV, PNG) + weights
MODE=${MODE:-full}
DEV=${DEV:-cuda}                  # cpu for a dry run of the script
W=/tmp/gpu_runs                   # run folders (checkpoints stay here)
mkdir -p "$OUT" "$W"
pack() { tar czf "$OUT/results.tgz" -C "$W" --exclude='*.pt' --exclude='tb' . 2>/dev/null; }
trap pack EXIT
export PYTHONUNBUFFERED=1
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 3; }
  export PYTHONPATH=$ROOT/.gpu/site:/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
export RETAIL_DETECT_CACHE=/tmp/rd-cache
# the groceries copy travels as one archive (thousands of small files cost more than their bytes)
[ -d .gpu/groceries-voc ] || { [ -f .gpu/groceries-voc.tgz ] && tar xzf .gpu/groceries-voc.tgz -C .gpu; }
PY=python3
DET="$PY -m detect"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$W/gpu.txt" 2>&1
$PY - <<'EOF' 2>&1 | tee -a "$W/gpu.txt"
import torch, torchvision, cv2, albumentations, os
print("torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "cv2", cv2.__version__,
      "albumentations", albumentations.__version__, "cpus", os.cpu_count())
EOF
el "setup done"

if [ "$MODE" = smoke ]; then
  $PY -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors tests 2>&1 | tail -25 | tee "$W/pytest_gpu.txt"
  el "gpu tests done"
  $DET synth /tmp/s --images 256 --seed 1 --size 320 --workers 8 > "$W/smoke.log" 2>&1
  timeout 120 $DET train --data /tmp/s --epochs 2 --batch 64 --imgsz 320 --workers 6 --channels-last \
    --out /tmp/smoke_run --device $DEV --no-progress >> "$W/smoke.log" 2>&1; echo "train exit $?" >> "$W/smoke.log"
  timeout 60 $DET train --data .gpu/groceries.yaml --model fast_rcnn --proposals selective_search \
    --proposal-file .gpu/groceries_ss_fast.npz --imgsz 224 --epochs 1 --batch 32 --workers 6 \
    --out /tmp/smoke_frcnn --device $DEV --no-progress >> "$W/smoke.log" 2>&1; echo "frcnn exit $?" >> "$W/smoke.log"
  tail -30 "$W/smoke.log"
  timeout 90 $PY bench/infer.py --device $DEV --half --batch 256 --models ssd_torch,tv_ssdlite320 --iters 5 \
    --warmup 2 --video-frames 0 --json "$W/infer_smoke.json" 2>&1 | tail -15
  el "smoke done"
  exit 0
fi

if [ "$MODE" = profile ]; then
  timeout 200 $PY bench/gpu_profile.py --device $DEV --parts infer,train --iters 20 --train-images 2048 --train-batches 64,128 \
    --out-dir "$W" --json "$W/gpu_profile.json" > "$W/gpu_profile.txt" 2>&1; grep -v '^ \|^{\|^}' "$W/gpu_profile.txt" | tail -25
  el "profile done"; pack
  timeout 60 $PY bench/infer.py --device $DEV --half --batch 256 --size 320x320 --models ssd_trained,tv_ssdlite320 \
    --iters 10 --video-frames 0 --json "$W/infer_gpu_320.json" > "$W/infer_gpu_320.txt" 2>&1; tail -4 "$W/infer_gpu_320.txt"
  timeout 100 $PY -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -6 | tee "$W/pytest_gpu.txt"
  el "all done"; pack
  exit 0
fi

if [ "$MODE" = time5 ]; then
  # issue 10's GPU check: each detector with its defaults and `--time 5` on groceries. Both run at
  # once on the one GPU (7 loader workers each) so that the check fits one 10-minute call: each
  # gets part of the GPU, so the numbers are a floor for a run alone. Then the GPU tests and the
  # GPU inference benchmark with trained (shipped) weights (issue 14).
  $PY -c "from detect.data.spec import resolve_data as r; [r('.gpu/groceries.yaml', s) for s in ('train', 'val')]" \
    > "$W/cache.log" 2>&1  # the caches built once, not by both trainings at once
  for m in ssd fast_rcnn; do
    ( timeout 420 $DET train --data .gpu/groceries.yaml --model $m --time 5 --workers 7 \
        --out "$W/t5_$m" --device $DEV --no-progress; echo "exit $?" ) > "$W/t5_$m.log" 2>&1 &
  done
  wait; el "trainings done"; pack
  for m in ssd fast_rcnn; do
    timeout 60 $DET val --weights "$W/t5_$m/best.pt" --data .gpu/groceries.yaml --split val --device $DEV \
      --json "$W/t5_${m}_val.json" --workers 6 > "$W/t5_${m}_val.txt" 2>&1
    echo "== $m"; grep -E "time budget|^epoch|best.pt|^done|^exit" "$W/t5_$m.log" | cut -c1-48,190- ; tail -6 "$W/t5_${m}_val.txt"
  done
  pack; el "val done"
  timeout 100 $PY -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -8 | tee "$W/pytest_gpu.txt"
  el "gpu tests done"
  timeout 60 $PY bench/infer.py --device $DEV --half --batch 256 --size 320x320 \
    --models ssd_trained,tv_ssdlite320 --iters 20 --video-frames 0 --json "$W/infer_gpu_320.json" \
    > "$W/infer_gpu_320.txt" 2>&1; tail -5 "$W/infer_gpu_320.txt"
  el "all done"; pack
  exit 0
fi

if [ "$MODE" = real ]; then
  # groceries only, one training at a time (MODE=full ran four at once and each got ~250 img/s):
  # the SSD 0.75 target with the full 40-epoch AdamW schedule, then the Fast R-CNN race.
  timeout 300 $DET train --data .gpu/groceries.yaml --epochs 40 --batch 32 --imgsz 320 --workers 12 \
    --optimizer adamw --lr 0.001 --weight-decay 0.05 --channels-last --eval-every 4 \
    --out "$W/groc_adamw" --device $DEV --no-progress > "$W/groc_adamw.log" 2>&1
  el "groceries SSD done"; tail -4 "$W/groc_adamw.log"
  timeout 40 $DET val --weights "$W/groc_adamw/best.pt" --data .gpu/groceries.yaml --split val --max-det 100 \
    --json "$W/groc_adamw_val.json" --workers 8 > "$W/groc_adamw_val.txt" 2>&1; tail -3 "$W/groc_adamw_val.txt"; pack
  timeout 240 $PY bench/fast_rcnn.py --data .gpu/groceries.yaml --device $DEV --epochs 6 --batch 32 --workers 12 \
    --models fast_rcnn_rpn,fast_rcnn_ss --proposals .gpu/groceries_ss_fast.npz --out "$W/frcnn" > "$W/frcnn.log" 2>&1
  el "Fast R-CNN race done"; tail -8 "$W/frcnn.log"
  exit 0
fi

# ---- full run: three trainings share the GPU and the 16 cores ----
# (1) shipped default weights: SSD EfficientNet-Lite0 320 on synthetic shelves (seed 1)
(
  $DET synth /tmp/synth_train --images 4000 --seed 1 --size 320 --workers 6 \
  && timeout 320 $DET train --data /tmp/synth_train --epochs 40 --batch 64 --imgsz 320 --workers 4 \
       --channels-last --eval-every 5 --out "$W/synth_ssd" --device $DEV --no-progress
  echo "exit $?"
) > "$W/synth_train.log" 2>&1 &
P1=$!
# (2) groceries SSD, the 0.75 target: two settings, best by val voc_ap50
(
  timeout 320 $DET train --data .gpu/groceries.yaml --epochs 40 --batch 32 --imgsz 320 --workers 4 \
    --channels-last --eval-every 4 --out "$W/groc_sgd" --device $DEV --no-progress
  echo "exit $?"
) > "$W/groc_sgd.log" 2>&1 &
P2=$!
(
  timeout 320 $DET train --data .gpu/groceries.yaml --epochs 40 --batch 32 --imgsz 320 --workers 4 \
    --optimizer adamw --lr 0.001 --weight-decay 0.05 --channels-last --eval-every 4 \
    --out "$W/groc_adamw" --device $DEV --no-progress
  echo "exit $?"
) > "$W/groc_adamw.log" 2>&1 &
P4=$!
# (3) Fast R-CNN (selective search, RPN) and SSD on one backbone and budget, 224 px
(
  timeout 330 $PY bench/fast_rcnn.py --data .gpu/groceries.yaml --device $DEV --epochs 6 --batch 32 --workers 3 \
    --proposals .gpu/groceries_ss_fast.npz --out "$W/frcnn"
  echo "exit $?"
) > "$W/frcnn.log" 2>&1 &
P3=$!
wait $P2; el "groceries SSD done"; pack; tail -5 "$W/groc_sgd.log"
timeout 60 $DET val --weights "$W/groc_sgd/best.pt" --data .gpu/groceries.yaml --split val --max-det 100 \
  --json "$W/groc_sgd_val.json" --workers 6 > "$W/groc_sgd_val.txt" 2>&1
tail -8 "$W/groc_sgd_val.txt"
wait $P4; el "groceries SSD (AdamW) done"; tail -3 "$W/groc_adamw.log"
timeout 60 $DET val --weights "$W/groc_adamw/best.pt" --data .gpu/groceries.yaml --split val --max-det 100 \
  --json "$W/groc_adamw_val.json" --workers 6 > "$W/groc_adamw_val.txt" 2>&1
tail -3 "$W/groc_adamw_val.txt"; pack
wait $P1; el "synthetic SSD done"; pack; tail -5 "$W/synth_train.log"
# unseen-seed synthetic test split for the shipped weights
$DET synth /tmp/synth_test --images 1000 --seed 777 --size 320 --workers 8 > /dev/null 2>&1
timeout 45 $DET val --weights "$W/synth_ssd/best.pt" --data /tmp/synth_test --split all \
  --json "$W/synth_test_val.json" --workers 6 > "$W/synth_test_val.txt" 2>&1
tail -4 "$W/synth_test_val.txt"
$PY -c "from detect.engine.checkpoint import export_weights as e; e('$W/synth_ssd/best.pt', '$OUT/ssd_lite0_synth.pt', half=True)"
wait $P3; el "Fast R-CNN race done"; pack; tail -12 "$W/frcnn.log"
# GPU inference race (trained weights beside random ones) and GPU tests
timeout 80 $PY bench/infer.py --device $DEV --half --batch 256 --weights "$OUT/ssd_lite0_synth.pt" \
  --models ssd_torch,ssd_trained,tv_ssdlite320,tv_fasterrcnn_mnv3_320 --iters 20 --video-frames 0 \
  --json "$W/infer_gpu.json" > "$W/infer_gpu.txt" 2>&1; tail -6 "$W/infer_gpu.txt"
timeout 50 $PY bench/infer.py --device $DEV --half --batch 256 --size 320x320 --weights "$OUT/ssd_lite0_synth.pt" \
  --models ssd_torch,ssd_trained,tv_ssdlite320 --iters 20 --video-frames 0 \
  --json "$W/infer_gpu_320.json" > "$W/infer_gpu_320.txt" 2>&1; tail -5 "$W/infer_gpu_320.txt"
timeout 40 $PY bench/xml2pkl.py --files 20000 --repeat 2 --workers 8 > "$W/xml2pkl_16core.txt" 2>&1; tail -9 "$W/xml2pkl_16core.txt"
el "all done"
