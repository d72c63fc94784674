#!/usr/bin/env bash
# Refresh the README's screenshots (docs/screenshots/*.png) on purpose: the browser tests, with their shots
# written there instead of the temporary folder a plain test run uses (so `scripts/test.sh` never rewrites
# tracked files). Extra arguments go to pytest (e.g. -k workers). Review `git diff --stat docs/` afterwards.
# study-frameworks.png and study-patch.png come from the studies of docs/results.md, not from these tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MOCOLAB_SCREENSHOTS="$PWD/docs/screenshots" exec .venv/bin/python -m pytest tests/e2e "$@"
