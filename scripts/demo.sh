#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in rendered room, on CPU. Usage: scripts/demo.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/demo.py --out "${1:-outputs/demo}"
