#!/usr/bin/env bash
# The main job: set the machine up, then run the lab demo (two nodes, pods in three
# namespaces, a policy applied, the probe matrix before and after, the flows).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/podwire lab demo "$@"
