# Shared by the benchmarks that drive a `flotilla playground` with pgbench (sourced, not
# run). Expects PORT, CLIENTS and THREADS; defines BIN, WORK (removed at exit unless
# KEEP_WORK is set), PID (the playground) and:
#   start_playground [flags]   start a 3-store playground on PORT, wait until SQL is served
#   stop_playground
#   run SECONDS                TPC-B-like for SECONDS, prints its TPS
# A script may add process ids to EXTRA_PIDS to have them stopped at exit too.

command -v pgbench >/dev/null || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null
}

cargo build --release --bin flotilla >&2
BIN=${CARGO_TARGET_DIR:-target}/release/flotilla

WORK=$(mktemp -d "/tmp/flotilla-$(basename "$0" .sh)-bench.XXXXXX")
EXTRA_PIDS=()
cleanup() {
  for p in "${EXTRA_PIDS[@]}" ${PID:-}; do
    kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  if [ -n "${KEEP_WORK:-}" ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

start_playground() { # extra playground flags
  rm -f "$WORK/cluster/playground.json"
  "$BIN" playground --data-dir "$WORK/cluster" --stores 3 --sql-addr 127.0.0.1:$PORT \
    --ddl-backfill-rows-per-s 0 "$@" >>"$WORK/playground.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do [ -f "$WORK/cluster/playground.json" ] && break; sleep 0.1; done
  [ -f "$WORK/cluster/playground.json" ] || { echo "the playground did not start" >&2; exit 1; }
}
stop_playground() {
  kill "$PID" && wait "$PID" 2>/dev/null || true
  PID=
}
run() { # seconds -> tps
  pgbench -h 127.0.0.1 -p $PORT -U postgres -c "$CLIENTS" -j "$THREADS" -T "$1" \
    -M prepared postgres 2>&1 | tee -a "$WORK/runs.log" | awk '/^tps = / {print $3; exit}'
}
