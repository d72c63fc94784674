#!/usr/bin/env bash
# The UI's API types come from the server's OpenAPI document: this writes web/src/api/openapi.json and
# web/src/api/schema.d.ts (openapi-typescript), both committed; web/src/api/types.ts names the schemas the UI uses.
# With --check (scripts/test.sh) it writes them into a temporary folder instead and fails when they differ from
# the committed ones, so a server change the UI has not followed fails CI; tracked files are never rewritten.
# Usage: bash scripts/openapi.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
api=web/src/api

generate() {  # generate OUT_DIR
  # The app is only assembled, never started: no Redis or database connection is opened (the in-memory SQLite
  # URL keeps it from creating .mocolab/).
  PYTHONPATH=$PWD .venv/bin/python - "$1/openapi.json" <<'PY'
import json
import sys

from server.core.config import Settings
from server.main import create_app

app = create_app(Settings(database_url="sqlite:///:memory:"))
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write(json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n")
PY
  # --default-non-nullable false: a request field with a default stays optional (openapi-typescript 7 would
  # make it required); response fields with defaults are already required in FastAPI's output schemas.
  (cd web && npx --no-install openapi-typescript "$1/openapi.json" --output "$1/schema.d.ts" \
    --default-non-nullable false >/dev/null)
}

if [ "${1:-}" != "--check" ]; then
  generate "$(realpath "$api")"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generate "$tmp"
for f in openapi.json schema.d.ts; do
  if ! cmp -s "$tmp/$f" "$api/$f"; then
    diff -u "$api/$f" "$tmp/$f" | head -40 || true
    echo "openapi: $api/$f differs from what the server's OpenAPI document gives (diff above): run" \
      "'bash scripts/openapi.sh', make the UI compile again (npm run typecheck) and commit both" >&2
    exit 1
  fi
done
echo "openapi: $api/openapi.json and schema.d.ts match the server"
