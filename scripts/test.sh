#!/usr/bin/env bash
# Every check CI runs: setup, lint, types, then the whole test suite (unit and real-data tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
