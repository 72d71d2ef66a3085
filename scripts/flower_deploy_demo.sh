#!/usr/bin/env bash
# The Flower federation under attack on a real SuperLink with two SuperNodes, all on this machine (localhost,
# insecure: no TLS, no node authentication), instead of the simulation `python -m gidm_core federate` runs.
# Starts the SuperLink and two SuperNodes, submits deploy/flower with `flwr run`, waits for it, checks that the
# ServerApp wrote leakage.json and round-0001/, and stops every process it started (also on failure or Ctrl-C).
#
# Usage: scripts/flower_deploy_demo.sh [OUT]     (OUT: the ServerApp's output folder; default <work dir>/out)
# Env:   RUN_CONFIG   the run config (default: a 1-round tiny-32 DLG run of 20 iterations, ~25 s on 2 busy cores)
#        SUPERLINK_PORT, NODE_PORT_0, NODE_PORT_1   the HTTP ports (default 8000, 9094, 9095)
# Everything flwr writes (its config, installed FABs, logs) goes under a fresh work dir in /tmp, used as HOME and
# FLWR_HOME of each process, so nothing is left in ~/.flwr; the script prints that dir at the end.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d /tmp/gidm-flower-deploy.XXXXXX)"
OUT="$(realpath -m "${1:-$WORK/out}")"  # absolute: a relative `out` lands in the SuperLink's working directory
RUN_CONFIG="${RUN_CONFIG:-clients=2 rounds=1 method='dlg' pixel_iterations=20 model_config='tiny-32'}"
SUPERLINK_PORT="${SUPERLINK_PORT:-8000}"
NODE_PORTS=("${NODE_PORT_0:-9094}" "${NODE_PORT_1:-9095}")

# The FAB carries no code: each process imports gidm_core from this checkout. flower-superlink and flower-supernode
# start `flower-superexec` by name, so the venv's bin/ must be on PATH. One thread per torch process on a small box.
[ -x "$REPO/.venv/bin/flwr" ] && export PATH="$REPO/.venv/bin:$PATH"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

PIDS=()
descendants() {  # descendants PID: the process ids under PID (SuperExec, flwr-serverapp, flwr-clientapp)
  local child
  for child in $(pgrep -P "$1" || true); do
    echo "$child"
    descendants "$child"
  done
}
stop_all() {
  # SIGTERM shuts a SuperLink or SuperNode down cleanly; the SuperExec and app processes under it notice their
  # parent is gone and exit on their own within seconds, so wait for them too. SIGKILL only for one alive after 30 s.
  local pid all=()
  for pid in "${PIDS[@]}"; do all+=("$pid" $(descendants "$pid")); done
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 60); do
    local alive=0
    for pid in "${all[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${all[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every second until it succeeds
  local seconds="$1" what="$2"
  shift 2
  for _ in $(seq "$seconds"); do
    "$@" && return 0
    sleep 1
  done
  echo "gave up after ${seconds}s waiting for $what (logs in $WORK)" >&2
  return 1
}

start=$SECONDS
mkdir -p "$WORK/superlink" "$WORK/node-0" "$WORK/node-1" "$WORK/cli/.flwr"

# --disable-runtime-dependency-installation: otherwise the SuperLink `uv sync`s the FAB's [project] dependencies
# into a fresh environment for every run (package downloads); this app's dependencies are the checkout's venv.
(cd "$WORK/superlink" && HOME="$WORK/superlink" FLWR_HOME="$WORK/superlink/.flwr" exec flower-superlink \
  --insecure --disable-runtime-dependency-installation --port "$SUPERLINK_PORT" > "$WORK/superlink.log" 2>&1) &
PIDS+=($!)
wait_for 60 "the SuperLink" grep -q "Uvicorn running" "$WORK/superlink.log"

for i in 0 1; do
  (cd "$WORK/node-$i" && HOME="$WORK/node-$i" FLWR_HOME="$WORK/node-$i/.flwr" exec flower-supernode --insecure \
    --superlink "127.0.0.1:$SUPERLINK_PORT" --port "${NODE_PORTS[$i]}" \
    --node-config "partition-id=$i num-partitions=2" > "$WORK/node-$i.log" 2>&1) &
  PIDS+=($!)
done
nodes_up() { [ "$(grep -c "Activated node_id" "$WORK/superlink.log")" -ge 2 ]; }
wait_for 60 "both SuperNodes to register" nodes_up

cat > "$WORK/cli/.flwr/config.toml" <<EOF
[superlink]
default = "local-deploy"

[superlink.local-deploy]
address = "127.0.0.1:$SUPERLINK_PORT"
insecure = true
EOF
echo "SuperLink and 2 SuperNodes up after $((SECONDS - start)) s; submitting the run"
(cd "$REPO" && HOME="$WORK/cli" FLWR_HOME="$WORK/cli/.flwr" \
  flwr run deploy/flower local-deploy --stream --run-config "$RUN_CONFIG out='$OUT'") | tee "$WORK/flwr-run.log"

for path in "$OUT/leakage.json" "$OUT/round-0001/model_index.json"; do
  [ -f "$path" ] || { echo "the ServerApp did not write $path (logs in $WORK)" >&2; exit 1; }
done
stop_all
echo "done in $((SECONDS - start)) s: outputs in $OUT, logs and flwr state in $WORK"
