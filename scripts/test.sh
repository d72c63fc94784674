#!/usr/bin/env bash
# Every check CI runs: setup (which builds the web UI), lint, types, the UI's unit tests, formatting and API types
# (generated from the server's OpenAPI document), then the whole test suite (unit, real-data and browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
if [ -f web/package.json ]; then
  if command -v npm >/dev/null; then
    (cd web && npm test --silent)  # the UI's unit tests (Vitest)
    (cd web && npm run --silent format:check)  # prettier, as ruff is for the Python
    bash scripts/openapi.sh --check  # the UI's API types are the server's OpenAPI document's
    (cd web && npm run --silent typecheck)  # tsc (strict) over the UI against those types
  else
    echo "test: npm not found: the web UI's unit tests are skipped"
  fi
fi
.venv/bin/python -m pytest "$@"
