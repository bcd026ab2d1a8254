#!/usr/bin/env bash
# Adding a store under load: a 3-store playground (3 replicas, 1 meta, 1 SQL node) loaded
# with pgbench (scale 10) runs TPC-B-like; a fourth store is started by hand against the
# same meta service, and replica balance moves replicas to it while TPC-B-like goes on.
# Prints the TPS before, while the store fills and once it is balanced, the time until no
# store holds two replicas more than another (and no learner is left), and the replicas
# per store, as a markdown table. Every process shares the machine's cores.
#
#   bash bench/rebalance.sh                 # scale 10, 8 clients, 2 threads, 30 s runs
#   SCALE=1 DURATION=10 bash bench/rebalance.sh
#   KEEP_WORK=1 bash bench/rebalance.sh     # keep data and logs
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
DURATION=${DURATION:-30}
# Seconds of TPC-B-like after the load, not counted (see bench/pgbench.sh).
WARMUP=${WARMUP:-15}
# How long the fourth store may take to fill before the script gives up.
BALANCE_TIMEOUT=${BALANCE_TIMEOUT:-600}
PORT=${PORT:-55437}

# shellcheck source=bench/playground_lib.sh
source bench/playground_lib.sh

start_playground
META=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["meta_endpoints"])' \
  "$WORK/cluster/playground.json")

counts() { # replicas per store, "store:count" sorted by store, from the regions' peers
  "$BIN" ctl --meta "$META" regions | awk 'NR > 1 {
      n = split($6, peers, ",");
      for (i = 1; i <= n; i++) { split(peers[i], p, "@"); sub(/\(.*/, "", p[2]); c[p[2]]++ }
    } END { for (s in c) print s ":" c[s] }' | sort -n | paste -sd' '
}
balanced() { # no learner or joint peer left, 4 stores, within one replica of each other
  local regions
  regions=$("$BIN" ctl --meta "$META" regions | tail -n +2)
  ! grep -q '(' <<<"$regions" || return 1
  counts | tr ' ' '\n' | awk -F: '{ n++; if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2 }
    END { exit !(n == 4 && max - min <= 1) }'
}

pgbench -h 127.0.0.1 -p $PORT -U postgres -i -I dtGp -s "$SCALE" -q postgres >"$WORK/init.log" 2>&1 || {
  cat "$WORK/init.log" >&2
  exit 1
}
run "$WARMUP" >/dev/null
before=$(run "$DURATION")
counts_before=$(counts)
regions=$("$BIN" ctl --meta "$META" regions | tail -n +2 | wc -l)

# The fourth store: the playground's store command with an address and directory of its own.
NEW_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mapfile -t CMD < <(python3 - "$WORK/cluster/playground.json" "127.0.0.1:$NEW_PORT" "$WORK/store-new" <<'EOF'
import json, sys
procs = json.load(open(sys.argv[1]))["processes"]
cmd = next(p["command"] for p in procs if p["role"] == "store")
cmd[cmd.index("--addr") + 1] = sys.argv[2]
cmd[cmd.index("--data-dir") + 1] = sys.argv[3]
print("\n".join(cmd))
EOF
)
run "$DURATION" >"$WORK/during.tps" &
BENCH_PID=$!
EXTRA_PIDS+=("$BENCH_PID")
started_ms=$(( $(date +%s%N) / 1000000 ))
"${CMD[@]}" >"$WORK/store-new.log" 2>&1 &
STORE_PID=$!
EXTRA_PIDS+=("$STORE_PID")
until balanced; do
  if (( $(date +%s%N) / 1000000 - started_ms > BALANCE_TIMEOUT * 1000 )); then
    echo "not balanced within ${BALANCE_TIMEOUT}s: $(counts)" >&2
    exit 1
  fi
  sleep 0.5
done
took_ms=$(( $(date +%s%N) / 1000000 - started_ms ))
wait "$BENCH_PID"
during=$(cat "$WORK/during.tps")
# Four stores, balanced: what the fourth process alone costs on the shared cores.
after=$(run "$DURATION")
moved=$(grep -c "replica moved" "$WORK"/cluster/logs/meta-*.log || true)

echo
echo "| | TPC-B-like TPS | replicas per store (store:count) |"
echo "|---|---|---|"
echo "| 3 stores | $before | $counts_before |"
echo "| while the 4th fills (first ${DURATION} s) | $during | |"
echo "| 4 stores, balanced | $after | $(counts) |"
echo
echo "regions: $regions; replicas moved: $moved; from the store's start to balanced: $((took_ms / 1000)).$(( took_ms % 1000 / 100 )) s"
