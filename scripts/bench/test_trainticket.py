"""The Train-Ticket converter and scorer on a few hand-written spans and alerts (CI cannot reach
the real traces; this checks what turns them into events and what scores the alerts)."""

import csv
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "trainticket.py")
sys.path.insert(0, HERE)
import trainticket  # noqa: E402

GW = "ts-gateway-service-6f6cfc45b-d9pnv"
BASIC = "ts-basic-service-5dc8d4f9fd-llznp"
S = 1_675_079_460_000_000_000  # 2023-01-30T11:51:00Z in ns


def span(trace, sid, parent, pod, op, start_ms, dur_ms):
    start = S + start_ms * 1_000_000
    end = start + dur_ms * 1_000_000
    return [trace, sid, parent, pod, op, start, end, dur_ms * 1000]


ROWS = [
    span("t1", "a", "root", GW, "/*", 0, 50),
    span("t1", "b", "a", GW, "FilteringWebHandler.handle", 1, 48),
    span("t1", "c", "b", GW, "HTTP POST", 2, 40),
    span("t1", "d", "c", BASIC, "/api/v1/basicservice/basic/travels", 3, 30),
    span("t1", "e", "d", BASIC, "SELECT ts.route", 4, 5),
]


class ConvertTest(unittest.TestCase):
    def convert(self, *extra):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "trace"))
            with open(os.path.join(d, "trace", "11_51_trace.csv"), "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["TraceID", "SpanID", "ParentID", "PodName", "OperationName",
                            "StartTimeUnixNano", "EndTimeUnixNano", "Duration"])
                w.writerows(ROWS)
            out = os.path.join(d, "events.ndjson")
            subprocess.run([sys.executable, SCRIPT, "convert", "--data", d, "--output", out, *extra],
                           check=True, capture_output=True)
            with open(out) as f:
                return [json.loads(line) for line in f]

    def test_server_spans_become_events_linked_to_the_callers_server_span(self):
        events = self.convert()
        self.assertEqual(len(events), 2, events)
        root, basic = events
        self.assertEqual(root["service.name"], "ts-gateway-service")
        self.assertNotIn("parent.id", root)
        self.assertEqual(basic["service.name"], "ts-basic-service")
        self.assertEqual(basic["host.name"], BASIC)
        self.assertEqual(basic["http.request.method"], "POST")
        self.assertEqual(basic["url.path"], "/api/v1/basicservice/basic/travels")
        self.assertEqual(basic["event.duration"], 30_000_000)
        self.assertEqual(basic["parent.id"], "a", "the caller's server span, not its exit span")
        self.assertEqual(basic["@timestamp"], "2023-01-30T11:51:00.003Z")

    def test_client_spans_are_marked_as_elastic_apm_marks_them(self):
        events = self.convert("--client-spans")
        clients = [e for e in events if e.get("span.kind") == "client"]
        self.assertEqual(len(clients), 1, events)
        self.assertEqual(clients[0]["service.name"], "ts-gateway-service")
        self.assertEqual(clients[0]["service.target.name"], "ts-basic-service")
        self.assertEqual(clients[0]["event.duration"], 40_000_000)
        self.assertEqual(clients[0]["transaction.id"], "a", "the caller's own server span")
        basic = [e for e in events if e["service.name"] == "ts-basic-service"][0]
        self.assertEqual(basic["parent.id"], "c", "under the caller's exit span, as APM links them")


class NezhaWindowsTest(unittest.TestCase):
    def test_faults_are_timed_on_the_traces_clock_and_windows_are_their_three_minutes(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "trace"))
            with open(os.path.join(d, "2023-01-29-fault_list.json"), "w") as f:
                # As published: inject_timestamp is 8 h behind the traces and repeats itself.
                json.dump({"08": [{"inject_time": "2023-01-29 08:43:04", "inject_timestamp": "1674953044",
                                   "inject_pod": BASIC, "inject_type": "return"}],
                           "09": [{"inject_time": "2023-01-29 09:12:56", "inject_timestamp": "1674953044",
                                   "inject_pod": GW, "inject_type": "exception"}]}, f)
            for name in ["08_43", "08_44", "08_45", "08_46"]:
                with open(os.path.join(d, "trace", f"{name}_trace.csv"), "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(["TraceID", "SpanID", "ParentID", "PodName", "OperationName",
                                "StartTimeUnixNano", "EndTimeUnixNano", "Duration"])
                    w.writerow(["t", "a", "root", GW, "/*", 1, 2, 1])
            fl = trainticket.nezha_faults(d)
            self.assertEqual([(x["hhmm"], x["service"], x["type"]) for x in fl],
                             [("08:43", "ts-basic-service", "return"), ("09:12", "ts-gateway-service", "exception")])
            self.assertEqual(fl[0]["time"], 1674981784, "08:43:04 on the traces' clock")
            self.assertEqual(len(trainticket.fault_window(d, fl[0])), 3, "the injection's minute and two after")
            self.assertEqual(trainticket.fault_window(d, fl[1]), [], "no trace files: nothing")


class ScoreTest(unittest.TestCase):
    def test_a_fault_counts_its_own_alert_and_the_rank_of_its_service(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "label.json"), "w") as f:
                json.dump({"11": [{"inject_time": "2023-01-30 11:51:46", "inject_timestamp": "1675079506",
                                   "inject_pod": BASIC, "inject_type": "network_delay"}]}, f)
            alerts = [
                # open before the fault: not its own
                {"@timestamp": "2023-01-30T11:40:00.000Z", "alert.id": "old", "alert.start": "2023-01-30T11:39:00.000Z",
                 "service.name": "ts-basic-service", "alert.services": ["ts-basic-service"]},
                {"@timestamp": "2023-01-30T11:53:00.000Z", "alert.id": "new", "alert.start": "2023-01-30T11:52:00.000Z",
                 "service.name": "ts-travel-service", "alert.services": ["ts-travel-service", "ts-basic-service"],
                 "alert.suspects": [{"service": "ts-travel-service"}, {"service": "ts-basic-service"}]},
                {"@timestamp": "2023-01-30T17:00:00.000Z", "alert.id": "evening", "alert.start": "2023-01-30T17:00:00.000Z",
                 "service.name": "ts-auth-service", "alert.services": ["ts-auth-service"]},
            ]
            with open(os.path.join(d, "alerts.ndjson"), "w") as f:
                f.writelines(json.dumps(a) + "\n" for a in alerts)
            res = os.path.join(d, "res.json")
            out = subprocess.run([sys.executable, SCRIPT, "score", "--data", d, "--output", d, "--json", res],
                                 check=True, capture_output=True, text=True).stdout
            with open(res) as f:
                r = json.load(f)
            fault = r["faults"][0]
            self.assertTrue(fault["detected"])
            self.assertEqual(fault["rank"], 2, "second suspect of its own alert")
            self.assertAlmostEqual(fault["delay_s"], 74, delta=1)
            self.assertIn("false alerts 1 over", out)

    def test_pod_names_lose_their_replica_set_and_pod_suffixes(self):
        self.assertEqual(trainticket.service_of(BASIC), "ts-basic-service")
        self.assertEqual(trainticket.service_of("ts-consign-price-service-df498d7fb-527hf"), "ts-consign-price-service")


if __name__ == "__main__":
    unittest.main()
