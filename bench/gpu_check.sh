#!/usr/bin/env bash
# One short, self-limiting GPU check of the engine, for a lent GPU machine that has no network access.
#
#   OUT=/some/dir bash bench/gpu_check.sh      # from anywhere; runs in the repo root; OUT defaults to ./gpu-out
#
# Issue 12 ("the GPU's FLOPs"): images/s, achieved TFLOP/s and MFU of the engine's training step, augmentation
# included, for ViT-B/16 and ViT-S/16 at 224 px (batch 256, bf16), compiled and not; where a compiled ViT-B step's
# device time goes; the data path on the GPU. Targets: MFU >= 45% for ViT-B, >= 35% for ViT-S.
#
# Steps, each under `timeout` and never fatal to the rest (the whole script stays inside GPU_CHECK_BUDGET_S,
# default 480 s; a step that would start with under 10 s left is skipped), the most important first:
#   1. env       nvidia-smi, python/torch/timm versions, torch.cuda.is_available()          -> OUT/env.txt
#   2. setup     a python with CUDA torch (the machine's own python3, else /opt/torch/.venv, else .venv); the
#                wheels in ./.whl (pydantic & co., timm; see below) into /tmp/site; PYTHONPATH=/tmp/site:REPO
#                (`pip install -e .` is not possible there: the image's python is 3.12, the project pins 3.11);
#                Fashion-MNIST from ./gpu-data when Debian's /usr/share/datasets/fashion-mnist is missing
#                                                                                           -> OUT/env.txt
#   3. mfu       bench/engine.py --no-baseline, batch 256 at 224 px, bf16: ViT-B/16 compiled, ViT-S/16 compiled,
#                ViT-B/16 eager, ViT-S/16 eager (images/s, TFLOP/s, MFU), then a summary against the targets
#                                                                                           -> OUT/mfu.txt, mfu.json
#   4. profile   bench/profile_step.py on a compiled ViT-B/16 step (phases, work by kind, top kernels; inductor's
#                on-disk cache from step 3 shortens its compilation)                       -> OUT/profile-vitb.txt
#   5. pytest    the tests in tests/core that skip without CUDA (no host sync in a compiled step, TF32 flags,
#                the augmentation fused by inductor, ...)                                  -> OUT/pytest-cuda.txt
#   6. patch     the patch embedding at ViT-B's shape in bf16: cuDNN's convolution against the engine's GEMM
#                (models/vit.py LinearPatchEmbed)                                          -> OUT/mfu.txt
#   7. data      bench/data.py --device cuda, when that file exists                         -> OUT/data.txt
#   8. legacy    (GPU_CHECK_ALL=1; off by default: it does not fit the budget) the earlier checks: ViT-S/16 and
#                fmnist_small against the official-style baseline, a 702-step fmnist_small pretraining, one run
#                through an agent (bench/scale.py), the rest of tests/core on the GPU       -> OUT/legacy.txt
# OUT/gpu_check.log holds each step's start, end, exit status and seconds. At most 8 files land in OUT.
#
# Prepared on the developer machine (ignored by .git/info/exclude, passed to the device tool as `carry`):
#   .whl/      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#                --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 \
#                pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 \
#                timm==1.0.31
#   gpu-data/  cp -r /usr/share/datasets/fashion-mnist gpu-data   (Debian's dataset-fashion-mnist, 30 MB)
set -u
cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || { echo "gpu_check: cannot create OUT=$OUT"; exit 1; }
BUDGET=${GPU_CHECK_BUDGET_S:-480}
FMNIST=${GPU_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}  # Debian's path, where tests/conftest.py looks
LOG=$OUT/gpu_check.log
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
SECONDS=0

log() { echo "[gpu_check +${SECONDS}s] $*" | tee -a "$LOG"; }

# step NAME MAX_S FILE CMD...: run CMD under timeout min(MAX_S, budget left), output appended to FILE.
step() {
  local name=$1 max=$2 file=$3; shift 3
  local t=$((BUDGET - SECONDS))
  ((t > max)) && t=$max
  if ((t < 10)); then
    log "SKIP  $name: budget of ${BUDGET}s spent"
    echo "### $name: SKIPPED (budget of ${BUDGET}s spent)" >>"$file"
    return 0
  fi
  log "START $name (timeout ${t}s) -> $(basename "$file")"
  echo "### $name (timeout ${t}s): $*" >>"$file"
  local t0=$SECONDS rc=0
  timeout -k 5 "$t" "$@" >>"$file" 2>&1 || rc=$?
  local note=""
  ((rc == 124 || rc == 137)) && note=" TIMED OUT"
  log "END   $name rc=$rc in $((SECONDS - t0))s$note"
  echo "### $name: rc=$rc in $((SECONDS - t0))s$note" >>"$file"
  return 0
}

# -------------------------------------------------------------------------------------------- 1. env
ENV=$OUT/env.txt
versions() {  # the versions the given python sees (PYTHONPATH included)
  "$1" - <<'EOF'
import importlib.metadata as md, sys
print("python", sys.version.split()[0], sys.executable)
for name, dist in (("torch", "torch"), ("torchvision", "torchvision"), ("timm", "timm"), ("pydantic", "pydantic"),
                   ("pydantic_core", "pydantic_core"), ("typing_extensions", "typing_extensions"),
                   ("numpy", "numpy"), ("PIL", "pillow"), ("pytest", "pytest"), ("tqdm", "tqdm")):
    try:
        mod = __import__(name)
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            version = getattr(mod, "__version__", "?")
        print(f"{name:18s} {version:24s} {getattr(mod, '__file__', '')}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name:18s} MISSING ({type(exc).__name__}: {exc})")
try:
    import torch
    print("torch.cuda.is_available():", torch.cuda.is_available(), "| torch.version.cuda:", torch.version.cuda)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"device: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, "
              f"cc {p.major}.{p.minor}, bf16: {torch.cuda.is_bf16_supported()}")
except Exception as exc:  # noqa: BLE001
    print("torch check failed:", exc)
EOF
}

env_report() {
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  kernel: $(uname -r)  arch: $(uname -m)  cores: $(nproc)"
  echo "repo: $REPO  git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
  for cand in python3 /opt/torch/.venv/bin/python3; do
    command -v "$cand" >/dev/null || continue
    echo "--- $cand (as found, before setup)"
    versions "$cand"
  done
}
export -f versions env_report
export REPO
step env 40 "$ENV" bash -c env_report

# -------------------------------------------------------------------------------------------- 2. setup
pick_python() {  # first python whose torch sees CUDA ("PY cuda"); else the first with torch at all ("PY cpu")
  local cand fallback=""
  for cand in ${GPU_PY:-} python3 /opt/torch/.venv/bin/python3 "$REPO/.venv/bin/python"; do
    command -v "$cand" >/dev/null 2>&1 || continue
    if timeout 60 "$cand" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null; then
      echo "$cand cuda"; return
    elif [ $? = 3 ] && [ -z "$fallback" ]; then
      fallback="$cand cpu"
    fi
  done
  echo "$fallback"
}
read -r PY HAVE <<<"$(pick_python)"
PY=${PY:-}
HAVE=${HAVE:-none}
{
  echo "### setup"
  echo "python chosen: ${PY:-NONE} (torch device: $HAVE)"
} >>"$ENV"
log "python: ${PY:-NONE} (torch device: $HAVE)"
if [ -z "$PY" ]; then
  log "no python with torch found: nothing more to do"
  exit 0
fi

if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
  step wheels 90 "$ENV" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$REPO"/.whl/*.whl
  if grep -q "^### wheels: rc=0" "$ENV"; then
    export PYTHONPATH=/tmp/site
  elif ! "$PY" -m pip --version >/dev/null 2>&1; then  # no pip there: a wheel is a zip, unpack it as is
    step unzip-wheels 60 "$ENV" bash -c "for w in '$REPO'/.whl/*.whl; do '$PY' -m zipfile -e \"\$w\" /tmp/site || exit; done"
    grep -q "^### unzip-wheels: rc=0" "$ENV" && export PYTHONPATH=/tmp/site
  fi
else
  echo "no .whl folder: using the packages $PY already has" >>"$ENV"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO"
echo "PYTHONPATH=$PYTHONPATH" >>"$ENV"

DATA_SET=()  # extra --set for the engine when the data lives elsewhere than Debian's path
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && [ ! -f "$FMNIST/train-images-idx3-ubyte" ]; then
  if [ -f "$REPO/gpu-data/train-images-idx3-ubyte.gz" ]; then
    if mkdir -p "$FMNIST" 2>/dev/null && cp "$REPO"/gpu-data/*-ubyte* "$FMNIST"/ 2>/dev/null; then
      echo "Fashion-MNIST: copied ./gpu-data into $FMNIST" >>"$ENV"
    else
      DATA_SET=(--set "data.root=$REPO/gpu-data")
      echo "Fashion-MNIST: $FMNIST not writable; the engine reads ./gpu-data (data.root); fmnist tests skip" >>"$ENV"
    fi
  else
    echo "Fashion-MNIST: MISSING ($FMNIST and ./gpu-data): the bench, the pretraining and fmnist tests fail" >>"$ENV"
  fi
else
  echo "Fashion-MNIST: found at $FMNIST" >>"$ENV"
fi
ls -la "$FMNIST" >>"$ENV" 2>&1

step import 60 "$ENV" bash -c "versions '$PY' && '$PY' -c 'import mocov3_core.train, mocov3_core.data, mocov3_core.cli; print(\"mocov3_core imports: ok\")'"

# -------------------------------------------------------------------------------------------- 3. MFU
MFU=$OUT/mfu.txt
if [ "$HAVE" != cuda ]; then
  log "no CUDA: the ViT benches, the profile and the patch embedding bench are skipped"
  echo "### mfu: SKIPPED (no CUDA)" >>"$MFU"
fi
AT224=(--set data.crop_size=224 --set optim.batch_size=256 --set data.num_workers=16)
engine() {  # engine NAME MAX_S ARCH COMPILE: one bench/engine.py process, the engine alone, bf16 (precision auto)
  local name=$1 max=$2 arch=$3 compile=$4
  [ "$HAVE" = cuda ] || return 0
  step "$name" "$max" "$MFU" "$PY" bench/engine.py --no-baseline --set "model.arch=$arch" "${AT224[@]}" \
    --set "train.compile=$compile" ${DATA_SET[@]+"${DATA_SET[@]}"} --warmup 3 --steps 15 --json "/tmp/$name.json"
}
rm -f /tmp/mfu-*.json
engine mfu-vitb-compiled 210 vit_base_p16 true
engine mfu-vits-compiled 180 vit_small_p16 true
engine mfu-vitb-eager 75 vit_base_p16 false
engine mfu-vits-eager 60 vit_small_p16 false
"$PY" - "$OUT/mfu.json" /tmp/mfu-vitb-compiled.json /tmp/mfu-vits-compiled.json /tmp/mfu-vitb-eager.json \
  /tmp/mfu-vits-eager.json <<'PYEOF' >>"$MFU" 2>&1
import json, os, sys
runs = {os.path.basename(p)[len("mfu-"):-len(".json")]: json.load(open(p)) for p in sys.argv[2:] if os.path.exists(p)}
json.dump(runs, open(sys.argv[1], "w"), indent=1)
print("### summary (targets: ViT-B >= 45% MFU, ViT-S >= 35%, augmentation included)")
print(f"{'run':<16}{'images/s':>10}{'TFLOP/s':>10}{'MFU':>8}  {'step TFLOP':>10}  peak")
for name, r in runs.items():
    mfu = r.get("engine_mfu")
    print(f"{name:<16}{r['engine_imgs_per_s']:>10.1f}{r['engine_tflops']:>10.1f}"
          f"{(f'{100 * mfu:.1f}%' if mfu is not None else 'n/a'):>8}  {r['step_flops'] / 1e12:>10.2f}  {r.get('peak')}")
for name, target in (("vitb-compiled", 0.45), ("vits-compiled", 0.35)):
    mfu = runs.get(name, {}).get("engine_mfu")
    print(f"{name}: {'no figure' if mfu is None else ('MET' if mfu >= target else 'NOT MET')} "
          f"(target {100 * target:.0f}%)")
PYEOF

# -------------------------------------------------------------------------------------------- 4. profile
if [ "$HAVE" = cuda ]; then
  step profile-vitb 120 "$OUT/profile-vitb.txt" "$PY" bench/profile_step.py --set model.arch=vit_base_p16 \
    "${AT224[@]}" --set monitor.knn_every=0 ${DATA_SET[@]+"${DATA_SET[@]}"} --warmup 3 --steps 5 --top 30
fi

# -------------------------------------------------------------------------------------------- 5. CUDA tests
PYTEST=$OUT/pytest-cuda.txt
# Test ids of the tests that skip without CUDA: a skipif(...cuda...) or mark.cuda line, then its def.
mapfile -t CUDA_TESTS < <(
  grep -rlE "cuda" tests/core --include='test_*.py' | sort | while read -r f; do
    awk -v f="$f" '/skipif\(.*cuda|mark\.cuda/ {hit = 1; next}
                   hit && /^(async )?def test_/ {name = $2; sub(/\(.*/, "", name); print f "::" name; hit = 0}
                   hit && !/^[[:space:]]*@/ {hit = 0}' "$f"
  done
)
echo "CUDA-only tests found: ${CUDA_TESTS[*]:-none}" >>"$PYTEST"
if ((${#CUDA_TESTS[@]})); then
  step pytest-cuda 150 "$PYTEST" "$PY" -m pytest -q -p no:cacheprovider -rA "${CUDA_TESTS[@]}"
fi

# -------------------------------------------------------------------------------------------- 6. patch embedding
cat >/tmp/patch_bench.py <<'PYEOF'
"""The patch embedding of ViT-B/16 on 512 views at 224 px in bf16: cuDNN's stride-16 convolution (benchmark on,
as the engine runs it) against models/vit.py's LinearPatchEmbed (one GEMM); mean of 20 after 5 warm-ups."""
import torch
import torch.nn.functional as F
from mocov3_core.models.vit import LinearPatchEmbed

torch.backends.cudnn.benchmark = True
embed = LinearPatchEmbed(img_size=224, patch_size=16, in_chans=3, embed_dim=768).cuda()
x = torch.randn(512, 3, 224, 224, device="cuda")


def conv():
    return F.conv2d(x, embed.proj.weight, embed.proj.bias, stride=16).flatten(2).transpose(1, 2)


def gemm():
    return embed(x)


with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
    diff = (conv().float() - gemm().float()).abs().max().item()
    for name, fn in (("conv (cuDNN)", conv), ("GEMM (engine)", gemm)):
        for _ in range(5):
            fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            fn()
        end.record()
        torch.cuda.synchronize()
        print(f"patch embedding {name:<14}: {start.elapsed_time(end) / 20:.3f} ms per call")
print(f"max |conv - GEMM| in bf16: {diff:.4f}")
PYEOF
[ "$HAVE" = cuda ] && step patch-embed 45 "$MFU" "$PY" /tmp/patch_bench.py

# -------------------------------------------------------------------------------------------- 7. data path
if [ -f bench/data.py ]; then
  step data 150 "$OUT/data.txt" "$PY" bench/data.py --device cuda --workers 16 --per-class 110 --batch 128 --warmup 2 \
    --batches 6 --rounds 1
else
  echo "### data: SKIPPED (no bench/data.py in this checkout)" >>"$OUT/data.txt"
fi

# -------------------------------------------------------------------------------------------- 8. legacy checks
if [ "${GPU_CHECK_ALL:-0}" = 1 ]; then
  LEGACY=$OUT/legacy.txt
  if [ "$HAVE" = cuda ]; then
    step bench-vits-vs-baseline 110 "$LEGACY" "$PY" bench/engine.py --set model.arch=vit_small_p16 "${AT224[@]}" \
      ${DATA_SET[@]+"${DATA_SET[@]}"} --warmup 5 --steps 20
  fi
  step bench-fmnist-small 80 "$LEGACY" "$PY" bench/engine.py ${DATA_SET[@]+"${DATA_SET[@]}"} --warmup 5 --steps 30
  PRETRAIN_STEPS=${GPU_PRETRAIN_STEPS:-702}
  [ "$HAVE" = cuda ] || PRETRAIN_STEPS=${GPU_PRETRAIN_STEPS:-5}
  RUN=/tmp/gpu-pretrain  # checkpoints and events stay here: only the summary comes back
  rm -rf "$RUN"
  step pretrain 150 "$LEGACY" "$PY" -m mocov3_core pretrain --preset fmnist_small --out "$RUN" --resume none \
    --no-progress --set "train.max_steps=$PRETRAIN_STEPS" ${DATA_SET[@]+"${DATA_SET[@]}"}
  [ -f "$RUN/result.json" ] && { echo "### result.json"; cat "$RUN/result.json"; echo; } >>"$LEGACY"
  "$PY" - "$RUN/events.jsonl" <<'PYEOF' >>"$LEGACY" 2>&1
import json, statistics, sys
try:
    events = [json.loads(line) for line in open(sys.argv[1])]
except OSError as exc:
    sys.exit(f"### summary: no events ({exc})")
cfg = next((e["payload"] for e in events if e["type"] == "config"), {})
metrics = [e for e in events if e["type"] == "metrics"]
values = [e["payload"]["values"] for e in metrics]
rate = [v["imgs_per_s"] for v in values if "imgs_per_s" in v]
mfu = [v["mfu"] for v in values if "mfu" in v]
loss = [(e["payload"]["step"], e["payload"]["values"]["loss"]) for e in metrics if "loss" in e["payload"]["values"]]
knn = [(e["payload"]["step"], e["payload"]["values"]["knn_top1"]) for e in metrics if "knn_top1" in e["payload"]["values"]]
print("### pretrain summary")
print("device:", cfg.get("device"), "precision:", cfg.get("precision"), "compiled:", cfg.get("compiled"),
      "step FLOPs:", cfg.get("step_flops"), "peak TFLOP/s:", cfg.get("peak_tflops"))
print(f"events: {len(events)}, wall from first to last event: {events[-1]['time'] - events[0]['time']:.1f} s")
if rate:
    print(f"imgs/s over {len(rate)} log intervals: median {statistics.median(rate):.0f}, "
          f"median of the last half {statistics.median(rate[len(rate) // 2:]):.0f}, max {max(rate):.0f}")
if mfu:
    print(f"MFU (%), median of the last half: {statistics.median(mfu[len(mfu) // 2:]):.2f}")
if loss:
    print("loss: first", loss[0], "last", loss[-1])
print("knn_top1 (step, value):", knn)
print("alerts:", sum(e["type"] == "alert" for e in events), "| last status:",
      next((e["payload"] for e in reversed(events) if e["type"] == "status"), None))
PYEOF
  # The single-GPU path of the service: `mocolab worker --gpus all` on this machine, the run placed by the
  # scheduler and launched under torchrun, against a bare torchrun (bench/scale.py). It needs the service's
  # packages (celery, fastapi, sqlmodel, redis, uvicorn, redis-server): absent from the bare image, carry them.
  if [ "$HAVE" = cuda ] && "$PY" -c 'import celery, fastapi, sqlmodel, redis, uvicorn, alembic' >/dev/null 2>&1; then
    step scale 150 "$LEGACY" "$PY" bench/scale.py --procs 1 --rounds 1 --steps 60 --warmup 10 --batch 256 \
      --set train.device=cuda ${DATA_SET[@]+"${DATA_SET[@]}"}
  fi
  DESELECT=()
  for t in ${CUDA_TESTS[@]+"${CUDA_TESTS[@]}"}; do DESELECT+=(--deselect "$t"); done
  PT_TIMEOUT=()
  "$PY" -c 'import pytest_timeout' 2>/dev/null && PT_TIMEOUT=(--timeout 90)
  step pytest-core 240 "$LEGACY" "$PY" -m pytest -v -p no:cacheprovider --durations=10 \
    ${PT_TIMEOUT[@]+"${PT_TIMEOUT[@]}"} tests/core ${DESELECT[@]+"${DESELECT[@]}"}
fi

log "done in ${SECONDS}s; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit 0
