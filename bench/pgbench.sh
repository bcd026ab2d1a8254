#!/usr/bin/env bash
# pgbench TPC-B-like and select-only against a Flotilla 3-store playground (3 replicas,
# 1 meta, 1 SQL node), Flotilla standalone and a PostgreSQL 15 that this script starts on
# the same machine, in turns, in one session. Prints TPS and the ratios as a markdown
# table. Every process shares the machine's cores.
#
#   bash bench/pgbench.sh                # scale 10, 8 clients, 2 threads, 30 s per run
#   WARMUP=0 bash bench/pgbench.sh       # no warm-up run (default 15 s of TPC-B-like each)
#   SCALE=1 DURATION=10 bash bench/pgbench.sh
#   KEEP_WORK=1 bash bench/pgbench.sh    # keep data and logs (playground logs in cluster/logs)
#
# Both servers keep their default durability: fsync on, synchronous commit.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
DURATION=${DURATION:-30}
# Seconds of TPC-B-like on each server, not counted, between its initialisation and its
# measured runs: straight after `pgbench -i` the engines are still flushing and
# compacting the freshly loaded accounts, which measures the load, not the workload.
WARMUP=${WARMUP:-15}
FLOTILLA_PORT=${FLOTILLA_PORT:-55434}
CLUSTER_PORT=${CLUSTER_PORT:-55435}
PG_PORT=${PG_PORT:-55432}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

if [ ! -x "$PG_BIN/initdb" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
fi

cargo build --release --bin flotilla >&2
BIN=${CARGO_TARGET_DIR:-target}/release/flotilla

WORK=$(mktemp -d /tmp/flotilla-bench.XXXXXX)
chmod 777 "$WORK"
cleanup() {
  [ -n "${FLOTILLA_PID:-}" ] && kill "$FLOTILLA_PID" 2>/dev/null || true
  [ -n "${CLUSTER_PID:-}" ] && kill "$CLUSTER_PID" 2>/dev/null && wait "$CLUSTER_PID" 2>/dev/null || true
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
  if [ -n "${KEEP_WORK:-}" ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

"$BIN" standalone --data-dir "$WORK/flotilla" --sql-addr 127.0.0.1:$FLOTILLA_PORT \
  --http-addr 127.0.0.1:0 >"$WORK/flotilla.log" 2>&1 &
FLOTILLA_PID=$!

"$BIN" playground --data-dir "$WORK/cluster" --stores 3 --sql-addr 127.0.0.1:$CLUSTER_PORT \
  >"$WORK/playground.log" 2>&1 &
CLUSTER_PID=$!
for _ in $(seq 1 600); do [ -f "$WORK/cluster/playground.json" ] && break; sleep 0.1; done

runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK -c max_connections=100" start >/dev/null

for _ in $(seq 1 100); do
  psql -X -h 127.0.0.1 -p $FLOTILLA_PORT -U postgres -c 'SELECT 1' postgres >/dev/null 2>&1 && break
  sleep 0.1
done

run() { # port, extra args -> tps
  pgbench -h 127.0.0.1 -p "$1" -U postgres -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
    -M prepared "${@:2}" postgres 2>&1 | tee -a "$WORK/runs.log" | awk '/^tps = / {print $3; exit}'
}

for port in $PG_PORT $FLOTILLA_PORT $CLUSTER_PORT; do
  if ! pgbench -h 127.0.0.1 -p $port -U postgres -i -I dtGp -s "$SCALE" -q postgres >"$WORK/init-$port.log" 2>&1; then
    echo "pgbench -i failed on port $port:" >&2
    cat "$WORK/init-$port.log" >&2
    exit 1
  fi
done

if [ "$WARMUP" -gt 0 ]; then
  for port in $PG_PORT $FLOTILLA_PORT $CLUSTER_PORT; do
    DURATION=$WARMUP run $port >/dev/null
  done
fi

pg_tpcb=$(run $PG_PORT);        fl_tpcb=$(run $FLOTILLA_PORT);    cl_tpcb=$(run $CLUSTER_PORT)
pg_sel=$(run $PG_PORT -S);      fl_sel=$(run $FLOTILLA_PORT -S);  cl_sel=$(run $CLUSTER_PORT -S)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo "| workload | cluster (3 replicas) TPS | standalone TPS | PostgreSQL 15 TPS | cluster / standalone | standalone / PostgreSQL |"
echo "|---|---|---|---|---|---|"
echo "| TPC-B-like (scale $SCALE, $CLIENTS clients, prepared) | $cl_tpcb | $fl_tpcb | $pg_tpcb | $(ratio "$cl_tpcb" "$fl_tpcb") | $(ratio "$fl_tpcb" "$pg_tpcb") |"
echo "| select-only (scale $SCALE, $CLIENTS clients, prepared) | $cl_sel | $fl_sel | $pg_sel | $(ratio "$cl_sel" "$fl_sel") | $(ratio "$fl_sel" "$pg_sel") |"
grep -h "number of failed" "$WORK/runs.log" | sed 's/^/    /' >&2
