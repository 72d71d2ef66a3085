#!/usr/bin/env bash
# The exact commands that made assets/images/ and assets/models/{faces32,faces64}/.
# Both runs were started with --rounds 1000 and stopped by hand when the time budget ran out; --rounds only bounds
# the loop (nothing else depends on it), so `--rounds N` reproduces the round-N checkpoint exactly.
# FINAL32/FINAL64 are the rounds that were bundled (see each model card); EARLY is the early checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=".venv/bin/python"
export PYTHONPATH=.
FINAL32=${FINAL32:-100}
FINAL64=${FINAL64:-80}
EARLY=${EARLY:-5}

TRAIN32="python -m gidm_core train --out runs/faces32 --size 32 --arch small --clients 4 --clients-per-round 2 --rounds $FINAL32 --local-steps 20 --batch-size 8 --lr 2e-3 --checkpoint-every 5 --seed 0 --threads 1"
TRAIN64="python -m gidm_core train --out runs/faces64 --size 64 --arch small4 --clients 4 --clients-per-round 2 --rounds $FINAL64 --local-steps 15 --batch-size 8 --lr 2e-3 --checkpoint-every 5 --seed 0 --threads 1"

mkdir -p runs
$PY scripts/train_bundled.py victims
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  $PY ${TRAIN32#python } > runs/faces32.log 2>&1 &
  $PY ${TRAIN64#python } > runs/faces64.log 2>&1 &
  wait
fi
$PY scripts/train_bundled.py export faces32 runs/faces32 --early "$EARLY" --final "$FINAL32" --command "$TRAIN32"
$PY scripts/train_bundled.py export faces64 runs/faces64 --early "$EARLY" --final "$FINAL64" --command "$TRAIN64"
