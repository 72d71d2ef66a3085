#!/usr/bin/env bash
# Set up (first run only) and start the GIDM Explorer app at http://127.0.0.1:7860, offline, on the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python app.py "$@"
