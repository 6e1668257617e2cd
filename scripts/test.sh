#!/usr/bin/env bash
# The test command: install everything (idempotent), lint, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck disable=SC1091
. .venv/bin/activate
echo "[test] ruff"
ruff check .
echo "[test] import layers (lint-imports)"
lint-imports
echo "[test] pytest"
python -m pytest -q -p no:cacheprovider "$@"
