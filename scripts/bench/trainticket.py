#!/usr/bin/env python3
"""Train-Ticket fault traces (Nezha, FSE'23; TraStrainer's continuous 2023-01-30 stream) as an
apiwatch benchmark: convert the span CSVs into API-call events, run `apiwatch detect` on them by
hand, then score the alerts against the injected faults.

Get the data (never committed; about 180 MB):
    git clone https://github.com/IntelligentDDS/TraStrainer   # MIT; or the tool library's `fetch`
    # the stream is data/dataset/train_ticket/test/{trace/HH_MM_trace.csv, label.json}

    python3 scripts/bench/trainticket.py convert --data TraStrainer/data/dataset/train_ticket/test \
        --output /tmp/tt/events.ndjson
    apiwatch detect --input /tmp/tt/events.ndjson --output /tmp/tt/out
    python3 scripts/bench/trainticket.py score --data TraStrainer/data/dataset/train_ticket/test \
        --output /tmp/tt/out

Conversion. The CSVs hold every span (TraceID, SpanID, ParentID, PodName, OperationName, start
and end in ns). A *server* span is a trace's root or a span whose parent runs in another pod: one
API call seen by its callee, which is what the event contract describes. Each becomes one event:
`service.name` from the pod name (the ReplicaSet hash and pod suffix cut), `host.name` the pod,
`url.path` the operation (already a template), the method from the caller's exit span
(`HTTP POST` ...), `event.duration` end - start, status 200 (the CSVs carry no status code: the
code-defect faults of Nezha's other day leave little here), and `parent.id` the caller's *server*
span, so that the journey links callee to caller. With `--client-spans`, the caller's exit spans
are written too, marked as Elastic APM marks them (`span.kind: client`, `processor.event: span`,
`service.target.name`, `transaction.id` the caller's server span), and the callee's event then
hangs under the exit span (`parent.id`), as an APM transaction does.

The stream starts at 11:39, twelve minutes before the first fault. A fault-free hour of the same
load (14:59-15:58) is replayed before it, re-dated to end where the stream starts and with its
trace and span ids suffixed, so that the detectors have a learned hour, as a shop with an
existing history would. At 16:00 the load generator steps down tenfold (about 500 calls a minute
to 60) for the rest of the day: a real and unlabelled traffic drop, reported on its own line.
False alerts are counted over the fault-free rest of the day, the replayed hour and the step
excepted: 14:20-14:59 and 16:10-23:59.

Scoring. A fault is *detected* when an alert is raised between its injection and the end of its
window (three minutes) plus three minutes, and that alert was not already open before the
injection (an alert of its own). The injection times are the injector's and windows are a minute
wide, so an alert raised at the end of the window in which the injection falls, or of the window
before, counts too (a tolerance of one window, TOLERANCE_S). AC@k: the faulty service is among the first k suspects of the
first such alert (`alert.suspects`, else `service.name` then `alert.services`). Delay: raise time
minus injection. False alerts: alerts raised in the fault-free evening, per day.
Held out: faults injected at or after 13:00 (the second half of the stream); the earlier ones
and Nezha's 2023-01-29 faults may be looked at while tuning.
"""

import argparse
import csv
import glob
import json
import os
import re
import sys
from datetime import datetime, timezone

POD_SUFFIX = re.compile(r"-[0-9a-f]{8,10}-[0-9a-z]{5}$")
HTTP_EXIT = re.compile(r"^HTTP (GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS)$")
FAULT_WINDOW_S = 180
GRACE_S = 180
TOLERANCE_S = 60
HELD_OUT_FROM = "13:00"
EVENING = [("14:20", "14:59"), ("16:10", "23:59")]
STEP = ("15:59", "16:10")
REPLAY = ("14:59", "15:58")


def service_of(pod):
    return POD_SUFFIX.sub("", pod)


def iso(ns):
    secs, rem = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{rem // 1_000_000:03d}Z"


def minute_files(data):
    files = sorted(glob.glob(os.path.join(data, "trace", "*_trace.csv")))
    if not files:
        sys.exit(f"no trace/*_trace.csv under {data}: point --data at train_ticket/test of TraStrainer")
    return files


def read_minute(path):
    """Rows of one minute file, grouped by trace (a trace may straddle two files: it is
    converted with the spans each file has)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def caller_server_span(span, by_id):
    """The server span a local span belongs to: walk up while the parent runs in the same pod."""
    anc = span
    while anc is not None and anc["ParentID"] != "root":
        up = by_id.get(anc["ParentID"])
        if up is None or up["PodName"] != anc["PodName"]:
            break
        anc = up
    return anc


def convert_rows(rows, shift_ns, suffix, client_spans):
    by_id = {r["SpanID"]: r for r in rows}
    remote_children = {}
    for r in rows:
        parent = by_id.get(r["ParentID"])
        if parent is not None and parent["PodName"] != r["PodName"]:
            remote_children.setdefault(r["ParentID"], []).append(r)
    out = []
    for r in rows:
        pod = r["PodName"]
        parent = by_id.get(r["ParentID"])
        is_root = r["ParentID"] == "root"
        is_server = is_root or (parent is not None and parent["PodName"] != pod)
        start, end = int(r["StartTimeUnixNano"]), int(r["EndTimeUnixNano"])
        if end < start:
            continue
        if is_server:
            method = "GET"
            if parent is not None:
                m = HTTP_EXIT.match(parent["OperationName"])
                if m:
                    method = m.group(1)
            ev = {
                "@timestamp": iso(start + shift_ns),
                "service.name": service_of(pod),
                "cloud.provider": "onprem",
                "host.name": pod,
                "http.request.method": method,
                "url.path": r["OperationName"],
                "http.response.status_code": 200,
                "event.duration": end - start,
                "trace.id": r["TraceID"] + suffix,
                "span.id": r["SpanID"] + suffix,
            }
            if client_spans and parent is not None and HTTP_EXIT.match(parent["OperationName"]):
                # As Elastic APM links them: the callee's transaction under the caller's exit span.
                ev["parent.id"] = parent["SpanID"] + suffix
            else:
                anc = caller_server_span(parent, by_id)
                if anc is not None:
                    ev["parent.id"] = anc["SpanID"] + suffix
            out.append((start + shift_ns, ev))
        elif client_spans and HTTP_EXIT.match(r["OperationName"]):
            children = remote_children.get(r["SpanID"], [])
            if not children:
                continue
            ev = {
                "@timestamp": iso(start + shift_ns),
                "service.name": service_of(pod),
                "cloud.provider": "onprem",
                "host.name": pod,
                "http.request.method": HTTP_EXIT.match(r["OperationName"]).group(1),
                "url.path": children[0]["OperationName"],
                "http.response.status_code": 200,
                "event.duration": end - start,
                "trace.id": r["TraceID"] + suffix,
                "span.id": r["SpanID"] + suffix,
                "span.kind": "client",
                "processor.event": "span",
                "service.target.name": service_of(children[0]["PodName"]),
            }
            own = caller_server_span(r, by_id)
            if own is not None:
                ev["transaction.id"] = own["SpanID"] + suffix
            out.append((start + shift_ns, ev))
    return out


def hhmm(path):
    return os.path.basename(path)[:5].replace("_", ":")


def convert(args):
    files = minute_files(args.data)
    stream_start = None
    replay = [f for f in files if REPLAY[0] <= hhmm(f) <= REPLAY[1]]
    events = []
    first = read_minute(files[0])
    stream_start = min(int(r["StartTimeUnixNano"]) for r in first) // 60_000_000_000 * 60_000_000_000
    if replay and not args.no_replay:
        rstart = min(int(r["StartTimeUnixNano"]) for r in read_minute(replay[0]))
        rstart = rstart // 60_000_000_000 * 60_000_000_000
        shift = stream_start - len(replay) * 60_000_000_000 - rstart
        for i, f in enumerate(replay):
            events.extend(convert_rows(read_minute(f), shift, "r", args.client_spans))
            print(f"\rreplay {i + 1}/{len(replay)}", end="", file=sys.stderr)
        print(file=sys.stderr)
    for i, f in enumerate(files):
        events.extend(convert_rows(read_minute(f), 0, "", args.client_spans))
        if i % 20 == 0 or i == len(files) - 1:
            print(f"\rstream {i + 1}/{len(files)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    events.sort(key=lambda e: e[0])
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as out:
        for _, ev in events:
            out.write(json.dumps(ev, separators=(",", ":")) + "\n")
    print(f"wrote {len(events)} events to {args.output}", file=sys.stderr)


def faults(data):
    with open(os.path.join(data, "label.json")) as f:
        labels = json.load(f)
    out = []
    for hour in sorted(labels):
        for x in labels[hour]:
            out.append(
                {
                    "time": int(x["inject_timestamp"]),
                    "hhmm": x["inject_time"][11:16],
                    "service": service_of(x["inject_pod"]),
                    "type": x["inject_type"],
                }
            )
    return sorted(out, key=lambda x: x["time"])


def parse_ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def suspects_of(alert):
    if alert.get("alert.suspects"):
        return [s["service"] for s in alert["alert.suspects"]]
    names = [alert.get("service.name")]
    names += [s.split("/")[0] for s in alert.get("alert.services", [])]
    seen, out = set(), []
    for n in names:
        if n and n not in seen:
            seen.add(n)
            out.append(n)
    return out


def load_alerts(out_dir):
    """One record per alert id: first raise time, start, and the suspects it was raised with
    (later updates of the same alert may add services; the analyst saw the first)."""
    alerts = {}
    with open(os.path.join(out_dir, "alerts.ndjson")) as f:
        for line in f:
            a = json.loads(line)
            aid = a["alert.id"]
            raised = parse_ts(a["@timestamp"])
            if aid not in alerts or raised < alerts[aid]["raised"]:
                alerts[aid] = {
                    "id": aid,
                    "raised": raised,
                    "start": parse_ts(a.get("alert.start", a["@timestamp"])),
                    "suspects": suspects_of(a),
                    "title": a.get("alert.title", ""),
                    "predicted": a.get("alert.predicted", False),
                }
            if a.get("alert.end"):
                alerts[aid]["end"] = parse_ts(a["alert.end"])
    return sorted(alerts.values(), key=lambda a: a["raised"])


def load_owners(out_dir):
    """Anomaly id -> (alert id, first raise time, origin) over every update of every alert."""
    owners = {}
    with open(os.path.join(out_dir, "alerts.ndjson")) as f:
        for line in f:
            a = json.loads(line)
            for i in a.get("alert.anomaly_ids", []):
                owners.setdefault(i, (a["alert.id"], a.get("service.name", "?")))
    return owners


def explain_miss(x, lo, hi, out_dir, alerts, owners):
    """Why a fault got no alert of its own, from what the worker wrote."""
    found = []
    path = os.path.join(out_dir, "anomalies.ndjson")
    with open(path) as f:
        for line in f:
            a = json.loads(line)
            t = parse_ts(a["anomaly.window.start"])
            if a.get("service.name") == x["service"] and lo <= t <= hi:
                found.append(a)
    if not found:
        return f"no anomaly on {x['service']} in the window"
    best = max(a["anomaly.score"] for a in found)
    held = sorted({a["anomaly.held_by"] for a in found if a.get("anomaly.held_by")})
    raised_at = {a["id"]: a["raised"] for a in alerts}
    joined = {}
    for a in found:
        if a["anomaly.id"] in owners:
            aid, origin = owners[a["anomaly.id"]]
            rules = joined.setdefault(aid, (origin, set()))[1]
            # The rule the alert manager grouped it by (absent in outputs of older versions).
            if a.get("anomaly.alert.grouped_by"):
                rules.add(a["anomaly.alert.grouped_by"])
    if joined:
        def part(aid, origin, rules):
            when = "after the window" if raised_at[aid] > hi else "before"
            by = f" (grouped by {', '.join(sorted(rules))})" if rules else ""
            return f"{origin} raised {day_clock(raised_at[aid])}, {when}{by}"
        parts = [part(aid, origin, rules) for aid, (origin, rules) in joined.items() if aid in raised_at]
        return f"{len(found)} anomalies on it (best score {best:.0f}) went to alerts not its own: " + "; ".join(parts)
    why = f"held by {', '.join(held)}" if held else "too weak to raise an alert alone"
    return f"{len(found)} anomalies on it (best score {best:.0f}), in no alert: {why}"


def day_clock(ts):
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%H:%M")


def score(args):
    fl = faults(args.data)
    alerts = load_alerts(args.output)
    owners = load_owners(args.output)
    rows = []
    for x in fl:
        lo, hi = x["time"] - TOLERANCE_S, x["time"] + FAULT_WINDOW_S + GRACE_S
        own = [a for a in alerts if lo <= a["raised"] <= hi]
        first = own[0] if own else None
        rank = None
        if first:
            # The best-ranked of the alerts of its own in the window: an analyst reads them all.
            ranks = [a["suspects"].index(x["service"]) + 1 for a in own if x["service"] in a["suspects"]]
            rank = min(ranks) if ranks else None
        why = None if first else explain_miss(x, lo, hi, args.output, alerts, owners)
        rows.append(
            {
                **x,
                "why_missed": why,
                "held_out": x["hhmm"] >= HELD_OUT_FROM,
                "detected": first is not None,
                "delay_s": (first["raised"] - x["time"]) if first else None,
                "rank": rank,
                "first_suspects": first["suspects"][:3] if first else [],
            }
        )
    day = datetime.fromtimestamp(fl[0]["time"], tz=timezone.utc).strftime("%Y-%m-%d")
    def at(hm):
        return datetime.fromisoformat(f"{day}T{hm}:00+00:00").timestamp()

    evening = [(at(lo), at(hi)) for lo, hi in EVENING]
    false_alerts = [a for a in alerts if any(lo <= a["raised"] < hi for lo, hi in evening)]
    per_day = len(false_alerts) * 86400 / sum(hi - lo for lo, hi in evening)
    step = [a for a in alerts if at(STEP[0]) <= a["raised"] < at(STEP[1])]

    def summary(sel, label):
        n = len(sel)
        det = sum(r["detected"] for r in sel)
        ac1 = sum(1 for r in sel if r["rank"] == 1)
        ac3 = sum(1 for r in sel if r["rank"] is not None and r["rank"] <= 3)
        delays = sorted(r["delay_s"] for r in sel if r["delay_s"] is not None)
        med = delays[len(delays) // 2] / 60 if delays else float("nan")
        print(f"{label:<28} faults {n:>2}  detected {det:>2}  AC@1 {ac1:>2}  AC@3 {ac3:>2}  median delay {med:.1f} min")

    if args.verbose:
        for r in rows:
            tag = "held-out" if r["held_out"] else "tuning"
            print(
                f"{r['hhmm']} {r['type']:<15} {r['service']:<32} {tag:<8} "
                f"{'DETECTED' if r['detected'] else 'missed  '} rank {r['rank'] or '-'} "
                f"delay {'-' if r['delay_s'] is None else round(r['delay_s'] / 60, 1)} min  "
                f"suspects {', '.join(r['first_suspects'])}"
                + (f"\n      why missed: {r['why_missed']}" if r["why_missed"] else "")
            )
        for a in false_alerts:
            print(f"false alert {day_clock(a['raised'])} {', '.join(a['suspects'][:3])}: {a['title'][:90]}")
    summary(rows, "all 17 (2023-01-30)")
    summary([r for r in rows if not r["held_out"]], f"tuning (before {HELD_OUT_FROM})")
    summary([r for r in rows if r["held_out"]], f"held out (from {HELD_OUT_FROM})")
    for t in sorted({r["type"] for r in rows}):
        summary([r for r in rows if r["type"] == t], t)
    spans = " and ".join(f"{lo}-{hi}" for lo, hi in EVENING)
    print(f"false alerts {len(false_alerts)} over {spans}: {per_day:.1f} a day")
    print(f"the load step at 16:00 (90% fewer calls everywhere): {len(step)} alert(s) "
          + "; ".join(f"{day_clock(a['raised'])} {a['title'][:70]}" for a in step))
    longest = max(((a.get("end", a["raised"]) - a["start"]) / 60, a["id"]) for a in alerts) if alerts else (0, "")
    print(f"alerts {len(alerts)}; longest alert {longest[0]:.0f} min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"faults": rows, "false_alerts_per_day": per_day}, f, indent=1)


def nezha_faults(day_dir):
    """Nezha's fault list of one day: injection time on the traces' clock (the list's
    `inject_time`; its `inject_timestamp` is 8 h earlier and repeats itself once), service, type."""
    lists = glob.glob(os.path.join(day_dir, "*-fault_list.json"))
    if not lists:
        sys.exit(f"no *-fault_list.json under {day_dir}: point --nezha at Nezha's rca_data/2023-01-29")
    with open(lists[0]) as f:
        labels = json.load(f)
    out = []
    for hour in sorted(labels):
        for x in labels[hour]:
            t = datetime.fromisoformat(x["inject_time"] + "+00:00").timestamp()
            out.append({"time": int(t), "hhmm": x["inject_time"][11:16], "service": service_of(x["inject_pod"]),
                        "type": x["inject_type"]})
    return sorted(out, key=lambda x: x["time"])


def fault_window(nezha, x):
    """The rows of a fault's three trace minutes (the injection's and the two after), by minute."""
    minute = x["time"] // 60 * 60
    names = [datetime.fromtimestamp(minute + 60 * k, tz=timezone.utc).strftime("%H_%M_trace.csv") for k in range(3)]
    files = [os.path.join(nezha, "trace", n) for n in names]
    return [read_minute(f) for f in files if os.path.exists(f)]


def minute_start(rows):
    return min(int(r["StartTimeUnixNano"]) for r in rows) // 60_000_000_000 * 60_000_000_000


def windows(args):
    """Each of Nezha's 3-minute fault windows after a history of the same day. The day has no
    fault-free hour (one normal minute), and another day's hour is no history for it (on
    2023-01-29 `ts-train-service` is 3x slower than on 2023-01-30: every window alerts it). So
    the history of a fault is the other windows of the day whose fault is on *another* service,
    in order and re-dated end to end so that no gap reads as silence, then the fault's window:
    the faulty service's own baseline is clean, the others' hold their faults. One `apiwatch
    detect` per fault; a fault is detected by an alert raised from one window before its
    injection to the end of its data."""
    import subprocess

    fl = nezha_faults(args.nezha)
    blocks = [(x, fault_window(args.nezha, x)) for x in fl]
    blocks = [(x, w) for x, w in blocks if w]
    os.makedirs(args.output, exist_ok=True)
    rows = []
    for i, (x, window) in enumerate(blocks):
        history = [w for y, w in blocks if y["service"] != x["service"]]
        wstart = minute_start(window[0])
        at = wstart - sum(len(w) for w in history) * 60_000_000_000
        events = []
        for n, w in enumerate(history):
            shift = at - minute_start(w[0])
            for mrows in w:
                events.extend(convert_rows(mrows, shift, f"h{n}", args.client_spans))
            at += len(w) * 60_000_000_000
        for mrows in window:
            events.extend(convert_rows(mrows, 0, "", args.client_spans))
        events.sort(key=lambda e: e[0])
        run = os.path.join(args.output, x["hhmm"].replace(":", "") + "-" + x["service"])
        os.makedirs(run, exist_ok=True)
        with open(os.path.join(run, "events.ndjson"), "w") as out:
            for _, ev in events:
                out.write(json.dumps(ev, separators=(",", ":")) + "\n")
        subprocess.run([args.apiwatch, "detect", "--input", os.path.join(run, "events.ndjson"), "--output", run],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        alerts = load_alerts(run)
        end = events[-1][0] / 1e9
        lo = x["time"] - TOLERANCE_S
        own = [a for a in alerts if lo <= a["raised"] <= end + GRACE_S]
        ranks = [a["suspects"].index(x["service"]) + 1 for a in own if x["service"] in a["suspects"]]
        history = [a for a in alerts if a["raised"] < wstart / 1e9]
        rows.append({**x, "detected": bool(own), "rank": min(ranks) if ranks else None,
                     "delay_s": own[0]["raised"] - x["time"] if own else None,
                     "first_suspects": own[0]["suspects"][:3] if own else [],
                     "history_alerts": len(history),
                     "why_missed": None if own else explain_miss(x, lo, end, run, alerts, load_owners(run))})
        print(f"\rfault {i + 1}/{len(fl)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    if args.verbose:
        for r in rows:
            print(f"{r['hhmm']} {r['type']:<15} {r['service']:<32} "
                  f"{'DETECTED' if r['detected'] else 'missed  '} rank {r['rank'] or '-'} "
                  f"suspects {', '.join(r['first_suspects'])}"
                  + (f"\n      why missed: {r['why_missed']}" if r["why_missed"] else ""))

    def summary(sel, label):
        det = sum(r["detected"] for r in sel)
        ac1 = sum(1 for r in sel if r["rank"] == 1)
        ac3 = sum(1 for r in sel if r["rank"] is not None and r["rank"] <= 3)
        print(f"{label:<28} faults {len(sel):>2}  detected {det:>2}  AC@1 {ac1:>2}  AC@3 {ac3:>2}")

    summary(rows, f"all {len(rows)} (2023-01-29)")
    for t in sorted({r["type"] for r in rows}):
        summary([r for r in rows if r["type"] == t], t)
    quiet = sum(r["history_alerts"] for r in rows)
    print(f"alerts raised in the histories (other services' faults): {quiet} over {len(rows)} runs")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"faults": rows}, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="span CSVs -> API-call events (NDJSON)")
    c.add_argument("--data", required=True, help="train_ticket/test directory (trace/, label.json)")
    c.add_argument("--output", required=True, help="events file to write")
    c.add_argument("--client-spans", action="store_true", help="also write the callers' exit spans")
    c.add_argument("--no-replay", action="store_true", help="do not replay the last hour first")
    s = sub.add_parser("score", help="score an apiwatch output directory against label.json")
    s.add_argument("--data", required=True, help="train_ticket/test directory (label.json)")
    s.add_argument("--output", required=True, help="apiwatch detect output directory")
    s.add_argument("--verbose", action="store_true", help="one line per fault and per false alert")
    s.add_argument("--json", help="also write the per-fault results here")
    w = sub.add_parser("windows", help="Nezha's 3-minute fault windows (2023-01-29), one detect run each")
    w.add_argument("--nezha", required=True, help="Nezha's rca_data/2023-01-29 (trace/, *-fault_list.json)")
    w.add_argument("--output", required=True, help="a directory for one run per fault")
    w.add_argument("--apiwatch", default="apiwatch", help="the apiwatch binary")
    w.add_argument("--client-spans", action="store_true", help="also write the callers' exit spans")
    w.add_argument("--verbose", action="store_true", help="one line per fault")
    w.add_argument("--json", help="also write the per-fault results here")
    args = p.parse_args()
    {"convert": convert, "score": score, "windows": windows}[args.cmd](args)


if __name__ == "__main__":
    main()
