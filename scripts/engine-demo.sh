#!/usr/bin/env bash
# The engine alone (no service) on real data: MoCo v3 pretraining of a small ViT on Fashion-MNIST on this machine
# (CPU, or a GPU if there is one), then kNN and linear-probe evaluation of the result, beside the same
# network at random initialisation and raw pixels. Everything lands in runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=1073741824  # glibc, see docs
out=${DEMO_OUT:-runs/demo}
py=.venv/bin/python
start=$(date +%s)
$py -m mocov3_core pretrain --preset fmnist_small --out "$out/pretrain" "$@"
echo "pretraining took $(( $(date +%s) - start )) s"
ckpt="$out/pretrain"
$py -m mocov3_core knn --checkpoint "$ckpt" --out "$out/knn"
$py -m mocov3_core knn --checkpoint "$ckpt" --random-init --out "$out/knn_random_init"
$py -m mocov3_core knn --pixels --set data.crop_size=28 --out "$out/knn_pixels"
$py -m mocov3_core linear --checkpoint "$ckpt" --out "$out/linear"
$py -m mocov3_core linear --checkpoint "$ckpt" --random-init --out "$out/linear_random_init"
$py - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [("MoCo v3 ViT (kNN)", "knn"), ("same ViT, random init (kNN)", "knn_random_init"),
        ("raw pixels (kNN)", "knn_pixels"), ("MoCo v3 ViT (linear probe)", "linear"),
        ("same ViT, random init (linear probe)", "linear_random_init")]
print("\nFashion-MNIST test top-1")
for name, d in rows:
    r = json.loads((out / d / "result.json").read_text())
    print(f"  {name:38s} {r['top1']:6.2f}%")
PY
