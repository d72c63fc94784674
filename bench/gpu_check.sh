#!/usr/bin/env bash
# One short, self-limiting GPU check of the engine, for a lent GPU machine that has no network access.
#
#   OUT=/some/dir bash bench/gpu_check.sh      # from anywhere; runs in the repo root; OUT defaults to ./gpu-out
#
# Steps, each under `timeout` and never fatal to the rest (the whole script stays inside GPU_CHECK_BUDGET_S,
# default 420 s; a step that would start with under 10 s left is skipped):
#   1. env       nvidia-smi, python/torch/timm versions, torch.cuda.is_available()          -> OUT/env.txt
#   2. setup     a python with CUDA torch (the machine's own python3, else /opt/torch/.venv, else .venv); the
#                wheels in ./.whl (pydantic & co., timm; see below) into /tmp/site; PYTHONPATH=/tmp/site:REPO
#                (`pip install -e .` is not possible there: the image's python is 3.12, the project pins 3.11);
#                Fashion-MNIST from ./gpu-data when Debian's /usr/share/datasets/fashion-mnist is missing
#                                                                                           -> OUT/env.txt
#   3. pytest    the tests in tests/core that skip without CUDA                             -> OUT/pytest-cuda.txt
#   4. bench     bench/engine.py: ViT-S/16 at 224 px (engine bf16, then engine fp32) and the fmnist_small
#                preset, each against the official-style baseline in the same process; bench/data.py: the
#                data path (official PIL pipeline vs ours, nvJPEG included)                -> OUT/bench-engine.txt
#                                                                                              OUT/bench-engine.json
#   5. pretrain  python -m mocov3_core pretrain --preset fmnist_small on CUDA, capped at GPU_PRETRAIN_STEPS
#                (default 702 = the preset's 3 epochs)                                      -> OUT/pretrain.txt
#                                                                                              OUT/pretrain-events.jsonl
#   5b. scale    (the service's packages present) one run through an agent (--gpus all) vs bare torchrun,
#                bench/scale.py                                                            -> OUT/scale.txt
#   6. core      (GPU_CHECK_CORE=1, default) the rest of tests/core on the GPU machine with the time left
#                (the fmnist-marked tests then train on CUDA)                              -> OUT/pytest-cuda.txt
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
BUDGET=${GPU_CHECK_BUDGET_S:-420}
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

# -------------------------------------------------------------------------------------------- 3. CUDA tests
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
  step pytest-cuda 120 "$PYTEST" "$PY" -m pytest -q -p no:cacheprovider -rA "${CUDA_TESTS[@]}"
fi

# -------------------------------------------------------------------------------------------- 4. bench
BENCH=$OUT/bench-engine.txt
if [ "$HAVE" != cuda ]; then  # ViT-S/16 at 224 px takes minutes per step on a CPU
  log "no CUDA: the ViT-S/16 benches are skipped"
  echo "### bench-vits-*: SKIPPED (no CUDA)" >>"$BENCH"
  GPU_PRETRAIN_STEPS=${GPU_PRETRAIN_STEPS:-5}
fi
VITS=(--set model.arch=vit_small_p16 --set data.crop_size=224 --set optim.batch_size=256 --set data.num_workers=16)
[ "$HAVE" = cuda ] && step bench-vits-auto 110 "$BENCH" "$PY" bench/engine.py "${VITS[@]}" ${DATA_SET[@]+"${DATA_SET[@]}"} --warmup 5 --steps 20 \
  --json /tmp/bench-vits-auto.json
[ "$HAVE" = cuda ] && step bench-vits-compile 170 "$BENCH" "$PY" bench/engine.py "${VITS[@]}" ${DATA_SET[@]+"${DATA_SET[@]}"} --set train.compile=true \
  --warmup 5 --steps 20 --json /tmp/bench-vits-compile.json
[ "$HAVE" = cuda ] && step bench-vits-fp32 80 "$BENCH" "$PY" bench/engine.py "${VITS[@]}" ${DATA_SET[@]+"${DATA_SET[@]}"} --set train.precision=fp32 \
  --warmup 3 --steps 10 --json /tmp/bench-vits-fp32.json
step bench-fmnist-small 80 "$BENCH" "$PY" bench/engine.py ${DATA_SET[@]+"${DATA_SET[@]}"} --warmup 5 --steps 30 \
  --json /tmp/bench-fmnist-small.json
# the data path: official ImageFolder + PIL pipeline vs ours (folder, packed, nvJPEG on the device), to set against
# the images/s a ViT-S/16 step consumes (the bench-vits-* lines above)
[ "$HAVE" = cuda ] && step bench-data 150 "$BENCH" "$PY" bench/data.py --device cuda --workers 16 --per-class 110 \
  --batch 128 --warmup 2 --batches 6 --rounds 1 --json /tmp/bench-data.json
"$PY" - "$OUT/bench-engine.json" /tmp/bench-vits-auto.json /tmp/bench-vits-compile.json /tmp/bench-vits-fp32.json /tmp/bench-fmnist-small.json \
  <<'EOF' >>"$BENCH" 2>&1
import json, os, sys
runs = {os.path.basename(p)[len("bench-"):-len(".json")]: json.load(open(p)) for p in sys.argv[2:] if os.path.exists(p)}
json.dump(runs, open(sys.argv[1], "w"), indent=1)
print("bench-engine.json:", ", ".join(f"{k} {v['ratio']:.2f}x" for k, v in runs.items()) or "no run finished")
EOF

# -------------------------------------------------------------------------------------------- 5. pretraining
PRETRAIN_STEPS=${GPU_PRETRAIN_STEPS:-702}
PRE=$OUT/pretrain.txt
RUN=/tmp/gpu-pretrain  # checkpoints stay here: only the events and the result come back
rm -rf "$RUN"
step pretrain 150 "$PRE" "$PY" -m mocov3_core pretrain --preset fmnist_small --out "$RUN" --resume none \
  --no-progress --set "train.max_steps=$PRETRAIN_STEPS" ${DATA_SET[@]+"${DATA_SET[@]}"}
[ -f "$RUN/events.jsonl" ] && cp "$RUN/events.jsonl" "$OUT/pretrain-events.jsonl"
[ -f "$RUN/result.json" ] && { echo "### result.json"; cat "$RUN/result.json"; echo; } >>"$PRE"
"$PY" - "$RUN/events.jsonl" <<'EOF' >>"$PRE" 2>&1
import json, statistics, sys
try:
    events = [json.loads(line) for line in open(sys.argv[1])]
except OSError as exc:
    sys.exit(f"### summary: no events ({exc})")
cfg = next((e["payload"] for e in events if e["type"] == "config"), {})
metrics = [e for e in events if e["type"] == "metrics"]
rate = [e["payload"]["values"]["imgs_per_s"] for e in metrics if "imgs_per_s" in e["payload"]["values"]]
loss = [(e["payload"]["step"], e["payload"]["values"]["loss"]) for e in metrics if "loss" in e["payload"]["values"]]
knn = [(e["payload"]["step"], e["payload"]["values"]["knn_top1"]) for e in metrics if "knn_top1" in e["payload"]["values"]]
print("### summary")
print("device:", cfg.get("device"), "precision:", cfg.get("precision"))
print(f"events: {len(events)}, wall from first to last event: {events[-1]['time'] - events[0]['time']:.1f} s")
if rate:
    print(f"imgs/s over {len(rate)} log intervals: median {statistics.median(rate):.0f}, "
          f"median of the last half {statistics.median(rate[len(rate) // 2:]):.0f}, max {max(rate):.0f}")
if loss:
    print("loss: first", loss[0], "last", loss[-1])
print("knn_top1 (step, value):", knn)
print("alerts:", sum(e["type"] == "alert" for e in events), "| last status:",
      next((e["payload"] for e in reversed(events) if e["type"] == "status"), None))
EOF

# -------------------------------------------------------------------------------------------- 5b. through an agent
# The single-GPU path of the service: `mocolab worker --gpus all` on this machine, the run placed by the scheduler
# and launched under torchrun, against the same run under a bare torchrun (bench/scale.py). It needs the service's
# packages (celery, fastapi, sqlmodel, redis, uvicorn, redis-server): absent from the bare image, carry them in .whl.
SCALE=$OUT/scale.txt
if [ "$HAVE" = cuda ] && "$PY" -c 'import celery, fastapi, sqlmodel, redis, uvicorn, alembic' >/dev/null 2>&1; then
  step scale 150 "$SCALE" "$PY" bench/scale.py --procs 1 --rounds 1 --steps 60 --warmup 10 --batch 256 \
    --set train.device=cuda ${DATA_SET[@]+"${DATA_SET[@]}"}
else
  echo "### scale: SKIPPED (no CUDA, or the service's packages are not installed here)" >>"$SCALE"
  log "SKIP  scale: no CUDA or no service packages"
fi

# -------------------------------------------------------------------------------------------- 6. rest of tests/core
if [ "${GPU_CHECK_CORE:-1}" = 1 ]; then
  DESELECT=()
  for t in ${CUDA_TESTS[@]+"${CUDA_TESTS[@]}"}; do DESELECT+=(--deselect "$t"); done
  PT_TIMEOUT=()
  "$PY" -c 'import pytest_timeout' 2>/dev/null && PT_TIMEOUT=(--timeout 90)
  step pytest-core 240 "$PYTEST" "$PY" -m pytest -v -p no:cacheprovider --durations=10 ${PT_TIMEOUT[@]+"${PT_TIMEOUT[@]}"} \
    tests/core ${DESELECT[@]+"${DESELECT[@]}"}
fi

log "done in ${SECONDS}s; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit 0
