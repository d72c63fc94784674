#!/usr/bin/env bash
# Every check CI runs: setup (which builds the web UI), lint, types, the UI's unit tests, then the whole test
# suite (unit, real-data and browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
if [ -f web/package.json ]; then
  if command -v npm >/dev/null; then
    (cd web && npm test --silent)  # the UI's unit tests (Vitest)
  else
    echo "test: npm not found: the web UI's unit tests are skipped"
  fi
fi
.venv/bin/python -m pytest "$@"
