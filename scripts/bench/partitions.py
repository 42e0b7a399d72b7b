#!/usr/bin/env python3
"""Scale of a partitioned backfill: the same range scored by 1, 2, 4 ... worker processes.

For each configuration a fresh result prefix is set up and N `apiwatch backfill --partitions P`
processes are started at once on it; each process's CPU time (user + system, from wait4) and
events scored are read, and Elasticsearch's own CPU time over the run (from /proc, when its
process ids are given or found) is added. Reported per configuration: events per worker, CPU
seconds per million events (apiwatch alone, and with Elasticsearch), wall time, and each as a
ratio to the first configuration. `--whole` adds the job run whole (one worker, no partitions)
first, as the reference.

    python3 scripts/bench/partitions.py --es URL --logs INDEX --from T0 --to T1 \\
        --apiwatch target/release/apiwatch --workers 1,2,4 --partitions 4 --whole

These 2 cores cap the wall-time speed-up; CPU per event is what projects to N workers on N cores.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def es_pids():
    """The Elasticsearch JVMs on this machine (their CPU counts toward the run)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"org.elasticsearch.bootstrap.Elasticsearch" in cmd:
            out.append(int(pid))
    return out


def cpu_of(pids):
    """User + system CPU seconds of the processes (and their reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / tick
    return total


def run_config(args, workers, partitions, config):
    prefix = f"scale{workers}x{partitions}-{int(time.time())}"
    subprocess.run([args.apiwatch, "setup", "--es", args.es, "--prefix", prefix], check=True, capture_output=True)
    es = es_pids()
    es_before = cpu_of(es)
    started = time.monotonic()
    procs = []
    for i in range(workers):
        cmd = [args.apiwatch, "backfill", "--es", args.es, "--prefix", prefix, "--logs", args.logs,
               "--from", args.from_, "--to", args.to, "--partitions", str(partitions),
               "--worker-id", f"w{i}", "--json", "--config", config]
        out = tempfile.TemporaryFile()
        procs.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL), out))
    results = []
    for p, out in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            sys.exit(f"worker exited {p.returncode} ({workers} workers, {partitions} partitions)")
        out.seek(0)
        summary = json.loads(out.read())
        results.append((summary["events"], usage.ru_utime + usage.ru_stime, usage.ru_maxrss))
    wall = time.monotonic() - started
    es_cpu = cpu_of(es) - es_before
    return {
        "workers": workers,
        "partitions": partitions,
        "events_per_worker": [r[0] for r in results],
        "events": sum(r[0] for r in results),
        "cpu_s": sum(r[1] for r in results),
        "es_cpu_s": es_cpu,
        "max_rss_mb": max(r[2] for r in results) / 1024,
        "wall_s": wall,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--es", required=True)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--from", dest="from_", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--apiwatch", required=True)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--whole", action="store_true", help="first run the job whole, as the reference")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write("[elasticsearch]\npoll_interval_secs = 1\n")
        config = f.name
    configs = ([(1, 1)] if args.whole else []) + [(int(w), args.partitions) for w in args.workers.split(",")]
    rows = []
    for workers, partitions in configs:
        print(f"running {workers} worker(s), {partitions} partition(s) ...", file=sys.stderr)
        rows.append(run_config(args, workers, partitions, config))
    os.unlink(config)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    ref = rows[0]
    per = lambda r, k: r[k] / max(r["events"], 1) * 1e6
    print("| workers x partitions | events per worker | apiwatch CPU s / M events | with Elasticsearch | wall s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        both = lambda x: per(x, "cpu_s") + per(x, "es_cpu_s")
        print(f"| {r['workers']} x {r['partitions']} | {', '.join(map(str, r['events_per_worker']))} "
              f"| {per(r, 'cpu_s'):.1f} ({per(r, 'cpu_s') / per(ref, 'cpu_s'):.2f}x) "
              f"| {both(r):.1f} ({both(r) / both(ref):.2f}x) "
              f"| {r['wall_s']:.1f} ({r['wall_s'] / ref['wall_s']:.2f}x) | {r['max_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
