#!/usr/bin/env bash
# Online schema change benchmarks (issue 4) against a Flotilla standalone:
#   1. ADD COLUMN time on tables of 10k and 1M rows (metadata-only: should be equal);
#   2. ADD INDEX backfill rate on 1M rows (pgbench_accounts, scale 10): at the default rate
#      limit, and unlimited (the server restarted with backfill_rows_per_s = 0; three
#      builds, their median, each once earlier dropped data is deleted);
#   3. pgbench TPC-B-like TPS and p99 latency idle vs while an index is built at the
#      default rate, twice each, alternating: an index on pgbench_accounts(bid), a column
#      pgbench never changes (what the backfill costs), then once on abalance, which every
#      transaction changes (the backfill plus maintaining the new index in every UPDATE);
#   4. the deletion of a dropped 1M-entry index's data at the default rate: pgbench p99
#      meanwhile, and how long it takes (the builds of 2. wait for earlier deletions).
#
#   bash bench/ddl.sh                 # release build, prints a markdown report
#   KEEP_WORK=1 bash bench/ddl.sh     # keep the data directory and logs
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-55440}
CLIENTS=${CLIENTS:-8}
DURATION=${DURATION:-20}

cargo build --release --bin flotilla >&2
BIN=${CARGO_TARGET_DIR:-target}/release/flotilla
WORK=$(mktemp -d /tmp/flotilla-ddl-bench.XXXXXX)
cleanup() {
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  if [ -n "${KEEP_WORK:-}" ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PSQL=(psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 postgres)
start() { # [config file]
  "$BIN" standalone --data-dir "$WORK/data" --sql-addr 127.0.0.1:$PORT --http-addr 127.0.0.1:0 \
    ${1:+--config "$1"} >>"$WORK/flotilla.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do "${PSQL[@]}" -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
}
start

pgbench -h 127.0.0.1 -p $PORT -U postgres -i -I dtGp -s 10 -q postgres >"$WORK/init.log" 2>&1
"${PSQL[@]}" -c "CREATE TABLE t10k (id INT PRIMARY KEY, v INT)" \
  -c "INSERT INTO t10k SELECT x, x FROM generate_series(1, 10000) AS x"

# Milliseconds of one statement, from psql's \timing.
timed() {
  "${PSQL[@]}" -c '\timing on' -c "$1" | awk '/^Time: / {print $2; exit}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

add_10k=$(for i in 1 2 3 4 5; do timed "ALTER TABLE t10k ADD COLUMN c$i INT DEFAULT $i"; done | median)
add_1m=$(for i in 1 2 3 4 5; do timed "ALTER TABLE pgbench_accounts ADD COLUMN c$i INT DEFAULT $i"; done | median)

# p99 of per-transaction latencies (microseconds in pgbench's log, third field).
run_pgbench() { # tag
  rm -f "$WORK"/pgbench_log.*
  (cd "$WORK" && pgbench -h 127.0.0.1 -p $PORT -U postgres -c "$CLIENTS" -j 2 -T "$DURATION" \
    -M prepared -l postgres >"$WORK/pgbench-$1.txt" 2>&1)
  local tps p99
  tps=$(awk '/^tps = / {printf "%.0f", $3; exit}' "$WORK/pgbench-$1.txt")
  p99=$(cat "$WORK"/pgbench_log.* | awk '{print $3}' | sort -n |
    awk '{a[NR]=$1} END {printf "%.1f", a[int(NR*0.99)] / 1000}')
  echo "$tps $p99"
}

# One index build at the default rate for the whole pgbench run (it would take ~200 s);
# then the rows it backfilled meanwhile are read and the job is cancelled.
build_while_pgbench() { # tag column
  "${PSQL[@]}" -c "CREATE INDEX accounts_building ON pgbench_accounts ($2)" \
    >>"$WORK/builds.log" 2>&1 &
  local builder=$!
  local result
  result=$(run_pgbench "$1")
  local line job rows
  line=$("${PSQL[@]}" -At -c "SHOW DDL JOBS" |
    awk -F'|' '$3 == "add index" && $4 == "running" {print $1 "|" $6; exit}')
  job=${line%%|*}
  rows=${line##*|}
  "${PSQL[@]}" -c "ADMIN CANCEL DDL JOB $job" >>"$WORK/builds.log" 2>&1 || true
  wait "$builder" || true
  echo "$result $rows"
}
read -r idle_tps idle_p99 < <(run_pgbench idle)
read -r busy_tps busy_p99 busy_rows < <(build_while_pgbench backfill bid)
read -r idle2_tps idle2_p99 < <(run_pgbench idle2)
read -r busy2_tps busy2_p99 busy2_rows < <(build_while_pgbench backfill2 bid)
read -r hot_tps hot_p99 hot_rows < <(build_while_pgbench backfill-hot abalance)

# Waits until no finished job has dropped data left to delete (bounded: 10 minutes).
await_cleanups() {
  for _ in $(seq 1 3000); do
    "${PSQL[@]}" -At -c "SHOW DDL JOBS" | grep -q "deleting data" || return 0
    sleep 0.2
  done
  echo "dropped data still being deleted after 10 minutes" >&2
  return 1
}

# The backfill's own speed, without its rate limit: three builds after a restart, each
# once the deletion of earlier dropped data has finished (it would compete for the disk
# and the cores).
kill "$PID"; wait "$PID" 2>/dev/null || true
"${PSQL[@]}" -c "SELECT 1" >/dev/null 2>&1 || true
printf '[ddl]\nbackfill_rows_per_s = 0\n' >"$WORK/unlimited.toml"
start "$WORK/unlimited.toml"
fast_runs=()
for i in 1 2 3; do
  await_cleanups
  fast_runs+=("$(timed "CREATE INDEX accounts_fast$i ON pgbench_accounts (abalance)")")
  [ "$i" = 1 ] && "${PSQL[@]}" -c "ADMIN CHECK TABLE pgbench_accounts" >"$WORK/check.txt"
done
fast_ms=$(printf '%s\n' "${fast_runs[@]}" | median)
fast_rate=$(awk -v ms="$fast_ms" 'BEGIN { printf "%.0f", 1000000 / (ms / 1000) }')

# The deletion of a dropped index's 1M entries at the default rate (20,000 records/s),
# with pgbench running for its first 20 s; then how long the whole deletion took.
read -r pre_tps pre_p99 < <(run_pgbench idle3)
drop_started=$(date +%s.%N)
"${PSQL[@]}" -c "DROP INDEX accounts_fast1"
read -r gc_tps gc_p99 < <(run_pgbench cleanup)
await_cleanups
gc_s=$(awk -v a="$drop_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

echo "| measurement | value |"
echo "|---|---|"
echo "| ADD COLUMN ... DEFAULT, 10k-row table (median of 5) | $add_10k ms |"
echo "| ADD COLUMN ... DEFAULT, 1M-row table (median of 5) | $add_1m ms |"
echo "| CREATE INDEX on 1M rows, no rate limit (median of ${fast_runs[*]} ms) | $fast_ms ms ($fast_rate rows/s) |"
echo "| pgbench TPC-B-like, idle | $idle_tps TPS, p99 $idle_p99 ms |"
echo "| pgbench TPC-B-like, while an index on bid is built at the default rate | $busy_tps TPS, p99 $busy_p99 ms ($busy_rows rows backfilled in ${DURATION} s) |"
echo "| pgbench TPC-B-like, idle (again) | $idle2_tps TPS, p99 $idle2_p99 ms |"
echo "| pgbench TPC-B-like, while an index on bid is built (again) | $busy2_tps TPS, p99 $busy2_p99 ms ($busy2_rows rows backfilled) |"
echo "| pgbench TPC-B-like, while an index on abalance (updated by every transaction) is built | $hot_tps TPS, p99 $hot_p99 ms ($hot_rows rows backfilled) |"
echo "| pgbench TPC-B-like, idle (after the unlimited builds) | $pre_tps TPS, p99 $pre_p99 ms |"
echo "| pgbench TPC-B-like, while a dropped 1M-entry index's data is deleted at the default rate | $gc_tps TPS, p99 $gc_p99 ms |"
echo "| DROP INDEX of 1M entries until its data is deleted (default rate, pgbench for the first ${DURATION} s) | $gc_s s |"
echo
echo "ADMIN CHECK TABLE after the first unlimited build:"
cat "$WORK/check.txt"
