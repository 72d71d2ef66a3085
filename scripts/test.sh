#!/usr/bin/env bash
# Set up (first run only), check the house rules (ruff, the import contracts), then run the test suite; arguments go
# to pytest (e.g. `-m "not slow"` for a quick loop). Installs Debian's chromium for the browser test if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped"
fi
.venv/bin/ruff check --quiet .
.venv/bin/lint-imports --no-cache
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python -m pytest "$@"
