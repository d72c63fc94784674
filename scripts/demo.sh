#!/usr/bin/env bash
# The demo: sets up .venv, then `mocolab demo`: an embedded Redis, SQLite, the server and one worker (GPU if
# there is one, else CPU) on this machine; it submits MoCo v3 pretraining of a small ViT on Fashion-MNIST and,
# when it ends, its kNN and linear-probe evaluations, and prints the URL to watch them. Extra arguments go to
# `mocolab demo` (e.g. --exit-when-done to print the results and exit, --host 0.0.0.0 --port 8000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mocolab demo "$@"
