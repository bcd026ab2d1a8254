#!/usr/bin/env python3
"""Failover time of a 3-store playground under a steady write load.

For each of KILLS rounds: find the store that leads the regions of table `t`, kill -9 it,
and measure the time from the kill to the first successful write to each affected range
(one writer per range keeps updating a row in it), then restart the store and let it catch
up. Prints p50 / p99 / max over all rounds as a markdown table.

    python3 bench/failover.py --bin target/release/flotilla [--kills 10]
"""
import argparse, json, os, signal, subprocess, sys, tempfile, threading, time

import psycopg


def ctl(binary, meta, *args):
    return subprocess.run([binary, "ctl", "--meta", meta, *args], capture_output=True, text=True, check=True).stdout


def regions(binary, meta):
    out = []
    for line in ctl(binary, meta, "regions").splitlines()[1:]:
        f = line.split()
        out.append({"id": int(f[0]), "start": f[1], "end": f[2], "leader": f[-1]})
    return out


def stores(binary, meta):
    out = {}
    for line in ctl(binary, meta, "stores").splitlines()[1:]:
        f = line.split()
        out[int(f[0])] = f[1]
    return out


def percentile(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/flotilla")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--ranges", type=int, default=4, help="rows written, spread over the table")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="flotilla-failover-")
    pg = subprocess.Popen([a.bin, "playground", "--data-dir", work, "--stores", "3"],
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "playground.err"), "w"))
    try:
        desc = os.path.join(work, "playground.json")
        for _ in range(600):
            if os.path.exists(desc):
                break
            time.sleep(0.1)
        d = json.load(open(desc))
        meta = d["meta_endpoints"]
        host, port = d["sql_addrs"][0].rsplit(":", 1)
        dsn = dict(host=host, port=int(port), user="postgres", dbname="postgres", autocommit=True, connect_timeout=5)
        c = psycopg.connect(**dsn)
        c.execute("CREATE TABLE t (id INT PRIMARY KEY, v BIGINT)")
        c.execute(f"INSERT INTO t SELECT g, 0 FROM generate_series(1, {a.ranges}) g")
        procs = {p["addr"]: p for p in d["processes"] if p["role"] == "store"}
        restarted = {}
        last_ok = {i: 0.0 for i in range(1, a.ranges + 1)}
        stop = threading.Event()

        def writer(row):
            conn = None
            while not stop.is_set():
                try:
                    if conn is None:
                        conn = psycopg.connect(**dsn)
                    conn.execute("UPDATE t SET v = v + 1 WHERE id = %s", (row,))
                    last_ok[row] = time.monotonic()
                except Exception:
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                    time.sleep(0.01)

        threads = [threading.Thread(target=writer, args=(r,), daemon=True) for r in last_ok]
        for t in threads:
            t.start()
        time.sleep(2)
        times = []
        for round_ in range(a.kills):
            # The store leading table t's region: the only table, so the only region
            # bounded on both sides (the others are before and after every table).
            table = [r for r in regions(a.bin, meta) if r["start"] != "-" and r["end"] != "-"]
            leader = table[0]["leader"]
            addr = stores(a.bin, meta)[int(leader)]
            pid = restarted[addr].pid if addr in restarted else procs[addr]["pid"]
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            deadline = killed + 60
            while time.monotonic() < deadline and any(v <= killed for v in last_ok.values()):
                time.sleep(0.005)
            waits = [v - killed for v in last_ok.values()]
            times.extend(waits)
            print(f"kill {round_ + 1}: store {leader}: first write after {max(waits):.3f} s (per range: "
                  + ", ".join(f"{w:.3f}" for w in waits) + ")", file=sys.stderr)
            p = procs[addr]
            restarted[addr] = subprocess.Popen(p["command"], stdout=subprocess.DEVNULL, stderr=open(p["log"], "a"))
            time.sleep(5)  # catch up, and let heartbeats tell meta the new leaders
        stop.set()
        print("| failover (kill -9 of the leading store, 3 stores) | p50 | p99 | max | samples |")
        print("|---|---|---|---|---|")
        print(f"| time from kill to the first successful write per range | {percentile(times, 50):.3f} s | "
              f"{percentile(times, 99):.3f} s | {max(times):.3f} s | {len(times)} |")
        for p in restarted.values():
            p.kill()
    finally:
        pg.send_signal(signal.SIGTERM)
        pg.wait()


if __name__ == "__main__":
    main()
