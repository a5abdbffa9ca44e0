#!/usr/bin/env bash
# The whole test suite: unit (pure), integration (root, real namespaces and BPF), e2e (lab).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
bash scripts/typecheck.sh
.venv/bin/python -m pytest "$@"
