#!/usr/bin/env bash
# Set up (first run only) and start the GIDM Explorer app at http://127.0.0.1:7860, offline, on the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
# MALLOC_ARENA_MAX=2: glibc's per-thread arenas otherwise let the server's memory creep up run after run.
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 MALLOC_ARENA_MAX=2
exec .venv/bin/python app.py "$@"
