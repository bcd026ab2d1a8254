#!/usr/bin/env bash
# What garbage collection costs a 3-store playground (3 replicas, 1 meta, 1 SQL node)
# under pgbench TPC-B-like: one run with GC off, then, on the same data after a restart,
# one with GC as eager as still makes sense (a 5 s life time, a new safe point every 5 s,
# the default pace of 50,000 records/s per store), then one with GC off again after
# another restart. Prints TPS and the records removed as a markdown table. Every process
# shares the machine's cores.
#
#   bash bench/gc.sh                      # scale 10, 8 clients, 2 threads, 30 s runs
#   SCALE=1 DURATION=10 bash bench/gc.sh
#   KEEP_WORK=1 bash bench/gc.sh          # keep data and logs (in cluster/logs)
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
DURATION=${DURATION:-30}
# Seconds of TPC-B-like after each start, not counted (see bench/pgbench.sh).
WARMUP=${WARMUP:-15}
PORT=${PORT:-55436}

# shellcheck source=bench/playground_lib.sh
source bench/playground_lib.sh

removed() { # records the stores logged as removed so far
  cat "$WORK"/cluster/logs/store-*.log | sed -n 's/.*GC removed old versions.* removed=\([0-9]*\).*/\1/p' \
    | awk '{ s += $1 } END { print s + 0 }'
}

start_playground --gc-life-time-s 0
pgbench -h 127.0.0.1 -p $PORT -U postgres -i -I dtGp -s "$SCALE" -q postgres >"$WORK/init.log" 2>&1 || {
  cat "$WORK/init.log" >&2
  exit 1
}
run "$WARMUP" >/dev/null
off=$(run "$DURATION")
stop_playground

start_playground --gc-life-time-s 5 --gc-run-interval-s 5
run "$WARMUP" >/dev/null
before=$(removed)
on=$(run "$DURATION")
on_removed=$(( $(removed) - before ))
stop_playground

# GC off again, after a restart as the run with GC had: what the restart alone changes.
start_playground --gc-life-time-s 0
run "$WARMUP" >/dev/null
off_again=$(run "$DURATION")
stop_playground

echo "| GC | TPC-B-like TPS (scale $SCALE, $CLIENTS clients, prepared) | records removed during the run |"
echo "|---|---|---|"
echo "| off | $off | 0 |"
echo "| 5 s life time, safe point every 5 s (after a restart) | $on | $on_removed (plus $before during the warm-up) |"
echo "| off (after a restart) | $off_again | 0 |"
awk -v a="$on" -v b="$off" -v c="$off_again" 'BEGIN { if (b > 0 && c > 0) printf "with GC: %+.0f %% against the first run, %+.0f %% against the last\n", (a / b - 1) * 100, (a / c - 1) * 100 }'
grep -h "number of failed" "$WORK/runs.log" | sed 's/^/    /' >&2
