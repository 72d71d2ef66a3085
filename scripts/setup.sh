#!/usr/bin/env bash
# Create .venv (if needed), install the pinned requirements into it, then this checkout as an editable package
# (no dependencies of its own: the pins above are the dependencies). Usage: scripts/setup.sh [requirements file]
# torch 2.14.1 / torchvision 0.29.1 are the pair that installs offline on the project's machines (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(basename "$requirements")-$(cat requirements*.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  touch "$stamp"
fi
