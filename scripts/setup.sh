#!/usr/bin/env bash
# Creates .venv and installs mocolab with its test tools, plus Debian's Fashion-MNIST and Chromium (the
# browser tests), and builds the web UI into web/dist when Node is present. Safe to rerun: each step is
# skipped when already done (pip reruns only when pyproject.toml changes, `npm ci` only when
# web/package-lock.json changes, the UI build only when its sources change).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  echo "setup: installing Debian's dataset-fashion-mnist"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing Debian's chromium for the browser tests (about 500 MB, a minute)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)"; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.mocolab-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv (torch is large: a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

# The web UI: `npm ci` when the lockfile changed, `npm run build` when a source changed; the server serves
# web/dist at /. Without Node the server says the UI is not built, and the browser tests skip.
if [ -f web/package.json ]; then
  if command -v node >/dev/null && command -v npm >/dev/null; then
    hash_of() {  # one hash over the files under the given paths of web/ (missing paths are skipped)
      (cd web && for p in "$@"; do if [ -e "$p" ]; then find "$p" -type f -not -path '*/node_modules/*'; fi; done \
        | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -d' ' -f1)
    }
    deps_stamp=web/node_modules/.mocolab-npm-ci
    deps_want=$(hash_of package.json package-lock.json)
    if [ ! -f "$deps_stamp" ] || [ "$(cat "$deps_stamp")" != "$deps_want" ]; then
      echo "setup: installing the web UI's packages (npm ci)"
      (cd web && npm ci --no-audit --no-fund --loglevel=error)
      echo "$deps_want" > "$deps_stamp"
    fi
    build_stamp=web/dist/.mocolab-build
    build_want=$(hash_of src index.html public package.json package-lock.json tsconfig.json \
                 vite.config.ts vite.config.js vite.config.mts)
    if [ ! -f web/dist/index.html ] || [ ! -f "$build_stamp" ] || [ "$(cat "$build_stamp")" != "$build_want" ]; then
      echo "setup: building the web UI into web/dist"
      (cd web && npm run build --silent)
      echo "$build_want" > "$build_stamp"
    fi
  else
    echo "setup: node/npm not found: the web UI is not built (the server shows a notice; browser tests skip)"
  fi
fi
