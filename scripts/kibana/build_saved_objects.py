#!/usr/bin/env python3
"""Writes kibana/apiwatch-saved-objects.ndjson: data views, Lens visualizations, saved searches
and the five dashboards (health, anomaly explorer, journeys, alerts, services).

The NDJSON is generated so that every panel is described once, in a few lines, and committed so
that `apiwatch setup --kibana URL` can import it without Python. worker/tests/kibana_objects.rs
checks the committed file: it parses, references resolve, and every field a visualization uses
exists in the index templates with a type that visualization accepts. Re-run after a change:
    python3 scripts/kibana/build_saved_objects.py
"""
import json
import os

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "kibana", "apiwatch-saved-objects.ndjson")
CORE = "8.11.0"

DATA_VIEWS = {
    "apiwatch-calls": ("logs-apiwatch.calls-*", "API calls", "@timestamp"),
    "apiwatch-anomalies": ("apiwatch-anomalies-*", "apiwatch anomalies", "@timestamp"),
    "apiwatch-alerts": ("apiwatch-alerts", "apiwatch alerts", "alert.start"),
    "apiwatch-journeys": ("apiwatch-journeys-*", "apiwatch journeys", "@timestamp"),
    "apiwatch-services": ("apiwatch-services", "apiwatch services", "last_seen"),
    "apiwatch-feedback": ("apiwatch-feedback", "apiwatch feedback", "@timestamp"),
}

# Fields shown as links. The answering links are signed by the worker when it writes an open
# alert (a Kibana URL template cannot sign), so the alert table shows them as clickable labels.
FIELD_FORMATS = {
    "apiwatch-alerts": {
        f"alert.link.{action}": {"id": "url", "params": {"type": "a", "labelTemplate": label, "openLinkInCurrentTab": False}}
        for action, label in [("ack", "Acknowledge"), ("silence", "Silence 1 h"), ("not_a_problem", "Not a problem")]
    },
}

objects = []


def data_view(id_, pattern, name, time_field):
    attributes = {"title": pattern, "name": name, "timeFieldName": time_field}
    if id_ in FIELD_FORMATS:
        attributes["fieldFormatMap"] = json.dumps(FIELD_FORMATS[id_], sort_keys=True)
    objects.append({
        "type": "index-pattern", "id": id_, "coreMigrationVersion": CORE,
        "attributes": attributes,
        "references": [],
    })


def col(op, field=None, label=None, kql=None, **params):
    c = {"operationType": op, "label": label or op, "isBucketed": op in ("date_histogram", "terms")}
    c["sourceField"] = field if field else "___records___"
    c["dataType"] = {"date_histogram": "date", "terms": "string"}.get(op, "number")
    if op == "date_histogram":
        params.setdefault("interval", "auto")
    if op == "terms":
        params.setdefault("size", 10)
        params.setdefault("orderDirection", "desc")
    if params:
        c["params"] = params
    if kql:
        c["filter"] = {"query": kql, "language": "kuery"}
    return c


def lens(id_, title, view, vis, columns, kql=""):
    """columns: ordered dict name -> column; vis: (type, x, ys, split) for XY, ('metric', y) ..."""
    layer = {"columns": columns, "columnOrder": list(columns), "incompleteColumns": {}}
    kind = vis[0]
    if kind in ("line", "bar_stacked", "bar_horizontal", "area"):
        _, x, ys, split = vis
        visualization = {
            "preferredSeriesType": kind,
            "legend": {"isVisible": True, "position": "right"},
            "layers": [dict({"layerId": "l", "layerType": "data", "seriesType": kind, "xAccessor": x,
                             "accessors": ys}, **({"splitAccessor": split} if split else {}))],
        }
        vtype = "lnsXY"
    elif kind == "metric":
        visualization = {"layerId": "l", "layerType": "data", "metricAccessor": vis[1]}
        vtype = "lnsMetric"
    elif kind == "table":
        visualization = {"layerId": "l", "layerType": "data", "columns": [{"columnId": c} for c in columns]}
        vtype = "lnsDatatable"
    else:
        raise ValueError(kind)
    objects.append({
        "type": "lens", "id": id_, "coreMigrationVersion": CORE,
        "attributes": {
            "title": title, "visualizationType": vtype,
            "state": {
                "datasourceStates": {"formBased": {"layers": {"l": layer}}},
                "visualization": visualization,
                "query": {"query": kql, "language": "kuery"}, "filters": [],
            },
        },
        "references": [{"type": "index-pattern", "id": view, "name": "indexpattern-datasource-layer-l"}],
    })


def search(id_, title, view, columns, sort, kql=""):
    source = {"query": {"query": kql, "language": "kuery"}, "filter": [],
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
    objects.append({
        "type": "search", "id": id_, "coreMigrationVersion": CORE,
        "attributes": {"title": title, "columns": columns, "sort": [sort],
                       "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source)}},
        "references": [{"type": "index-pattern", "id": view,
                        "name": "kibanaSavedObjectMeta.searchSourceJSON.index"}],
    })


def dashboard(id_, title, description, panels, controls=(), view=None):
    """panels: (type, id, w, h); laid out left to right, 48 columns wide."""
    x = y = row_h = 0
    out, refs = [], []
    for i, (ptype, pid, w, h) in enumerate(panels, 1):
        if x + w > 48:
            x, y, row_h = 0, y + row_h, 0
        out.append({"type": ptype, "panelIndex": str(i), "panelRefName": f"panel_{i}", "embeddableConfig": {},
                    "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(i)}})
        refs.append({"type": ptype, "id": pid, "name": f"{i}:panel_{i}"})
        x, row_h = x + w, max(row_h, h)
    attributes = {
        "title": title, "description": description, "timeRestore": False,
        "panelsJSON": json.dumps(out), "optionsJSON": json.dumps({"useMargins": True, "syncCursor": True}),
        "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}, "filter": []})},
    }
    if controls:
        panels_c = {}
        for order, field in enumerate(controls):
            cid = f"control-{field}"
            panels_c[cid] = {"order": order, "width": "medium", "grow": True, "type": "optionsListControl",
                             "explicitInput": {"id": cid, "fieldName": field, "title": field,
                                               "dataViewRefName": f"controlGroup_{cid}:optionsListDataView"}}
            refs.append({"type": "index-pattern", "id": view, "name": f"controlGroup_{cid}:optionsListDataView"})
        attributes["controlGroupInput"] = {"controlStyle": "oneLine", "chainingSystem": "HIERARCHICAL",
                                           "panelsJSON": json.dumps(panels_c)}
    objects.append({"type": "dashboard", "id": id_, "coreMigrationVersion": CORE,
                    "attributes": attributes, "references": refs})


for k, v in DATA_VIEWS.items():
    data_view(k, *v)

# (a) API health by environment.
lens("apiwatch-health-throughput", "Calls per provider", "apiwatch-calls", ("line", "t", ["n"], "p"),
     {"p": col("terms", "cloud.provider", "Provider", orderBy={"type": "column", "columnId": "n"}),
      "t": col("date_histogram", "@timestamp", "Time"), "n": col("count", label="Calls")})
lens("apiwatch-health-errors", "5xx calls per provider", "apiwatch-calls", ("bar_stacked", "t", ["n"], "p"),
     {"p": col("terms", "cloud.provider", "Provider", orderBy={"type": "column", "columnId": "n"}),
      "t": col("date_histogram", "@timestamp", "Time"),
      "n": col("count", label="5xx calls", kql="http.response.status_code >= 500")})
lens("apiwatch-health-p95", "p95 latency per provider (ns)", "apiwatch-calls", ("line", "t", ["q"], "p"),
     {"p": col("terms", "cloud.provider", "Provider", orderBy={"type": "column", "columnId": "q"}),
      "t": col("date_histogram", "@timestamp", "Time"),
      "q": col("percentile", "event.duration", "p95 event.duration", percentile=95)})
lens("apiwatch-health-services", "Services: calls, 5xx, p95", "apiwatch-calls", ("table",),
     {"s": col("terms", "service.name", "Service", size=50, orderBy={"type": "column", "columnId": "n"}),
      "p": col("terms", "cloud.provider", "Provider", size=10, orderBy={"type": "column", "columnId": "n"}),
      "n": col("count", label="Calls"),
      "e": col("count", label="5xx", kql="http.response.status_code >= 500"),
      "q": col("percentile", "event.duration", "p95 (ns)", percentile=95)})
dashboard("apiwatch-dashboard-health", "apiwatch: API health by environment",
          "Throughput, 5xx and p95 latency per cloud provider and service.",
          [("lens", "apiwatch-health-throughput", 24, 12), ("lens", "apiwatch-health-errors", 24, 12),
           ("lens", "apiwatch-health-p95", 24, 12), ("lens", "apiwatch-health-services", 24, 12)],
          controls=("cloud.provider", "service.name"), view="apiwatch-calls")

# (b) Anomaly explorer.
lens("apiwatch-anomalies-timeline", "Anomalies by severity", "apiwatch-anomalies", ("bar_stacked", "t", ["n"], "s"),
     {"s": col("terms", "anomaly.severity", "Severity", orderBy={"type": "column", "columnId": "n"}),
      "t": col("date_histogram", "@timestamp", "Time"), "n": col("count", label="Anomalies")})
lens("apiwatch-anomalies-detectors", "Anomalies by detector and kind", "apiwatch-anomalies", ("bar_horizontal", "d", ["n"], "k"),
     {"d": col("terms", "anomaly.detector", "Detector", orderBy={"type": "column", "columnId": "n"}),
      "k": col("terms", "anomaly.kind", "Kind", orderBy={"type": "column", "columnId": "n"}),
      "n": col("count", label="Anomalies")})
lens("apiwatch-anomalies-top", "Highest scores by service", "apiwatch-anomalies", ("table",),
     {"s": col("terms", "service.name", "Service", size=20, orderBy={"type": "column", "columnId": "m"}),
      "m": col("max", "anomaly.score", "Max score"), "n": col("count", label="Anomalies")})
search("apiwatch-anomalies-table", "Anomalies: reason and contributors", "apiwatch-anomalies",
       ["anomaly.severity", "anomaly.score", "anomaly.detector", "anomaly.kind", "service.name", "cloud.provider",
        "http.route", "anomaly.reason", "anomaly.contributors.name", "anomaly.contributors.share"],
       ["@timestamp", "desc"])
dashboard("apiwatch-dashboard-anomalies", "apiwatch: anomaly explorer",
          "Severity over time, who found what, and every anomaly with its reason and contributors.",
          [("lens", "apiwatch-anomalies-timeline", 32, 12), ("lens", "apiwatch-anomalies-top", 16, 12),
           ("lens", "apiwatch-anomalies-detectors", 48, 10), ("search", "apiwatch-anomalies-table", 48, 20)],
          controls=("anomaly.detector", "anomaly.kind", "anomaly.severity", "service.name"), view="apiwatch-anomalies")

# (c) Journeys.
search("apiwatch-journeys-slowest", "Slowest journeys", "apiwatch-journeys",
       ["journey.duration_ms", "journey.spans", "journey.services", "journey.providers", "journey.cross_provider_hops",
        "journey.failed", "journey.marked_hop", "journey.reason", "trace.id"],
       ["journey.duration_ms", "desc"])
lens("apiwatch-journeys-share", "Share of journey latency by hop", "apiwatch-journeys", ("bar_horizontal", "h", ["s"], None),
     {"h": col("terms", "journey.hops.from", "From", size=20, orderBy={"type": "column", "columnId": "s"}),
      "s": col("average", "journey.hops.share", "Mean share of the journey")})
lens("apiwatch-journeys-cross", "Cross-provider hop latency (ms)", "apiwatch-journeys", ("line", "t", ["d"], "h"),
     {"h": col("terms", "journey.hops.to", "To", size=10, orderBy={"type": "column", "columnId": "d"}),
      "t": col("date_histogram", "@timestamp", "Time"),
      "d": col("median", "journey.hops.duration_ms", "Median hop ms")},
     kql="journey.hops.cross_provider : true")
lens("apiwatch-journeys-duration", "Journey duration p95 (ms)", "apiwatch-journeys", ("line", "t", ["q"], None),
     {"t": col("date_histogram", "@timestamp", "Time"),
      "q": col("percentile", "journey.duration_ms", "p95 ms", percentile=95)})
dashboard("apiwatch-dashboard-journeys", "apiwatch: request journeys",
          "The slowest journeys, which hop takes the time, and hops that cross providers.",
          [("lens", "apiwatch-journeys-duration", 24, 12), ("lens", "apiwatch-journeys-cross", 24, 12),
           ("lens", "apiwatch-journeys-share", 48, 12), ("search", "apiwatch-journeys-slowest", 48, 20)],
          controls=("journey.providers", "journey.services"), view="apiwatch-journeys")

# (d) Alerts.
lens("apiwatch-alerts-open", "Open alerts by priority", "apiwatch-alerts", ("bar_horizontal", "p", ["n"], None),
     {"p": col("terms", "alert.priority", "Priority", orderBy={"type": "alphabetical"}, orderDirection="asc"),
      "n": col("count", label="Open alerts")}, kql='alert.status : "open"')
lens("apiwatch-alerts-timeline", "Alerts over time by priority", "apiwatch-alerts", ("bar_stacked", "t", ["n"], "p"),
     {"p": col("terms", "alert.priority", "Priority", orderBy={"type": "alphabetical"}, orderDirection="asc"),
      "t": col("date_histogram", "alert.start", "Start"), "n": col("count", label="Alerts")})
search("apiwatch-alerts-list", "Alerts", "apiwatch-alerts",
       ["alert.priority", "alert.status", "alert.title", "alert.services", "alert.kinds", "alert.predicted",
        "alert.impact.calls", "alert.impact.users", "alert.notifications", "alert.acknowledged.by",
        "alert.silence.id", "alert.link.ack", "alert.link.silence", "alert.link.not_a_problem"],
       ["alert.start", "desc"])
search("apiwatch-feedback-list", "Silences, acknowledgements and verdicts", "apiwatch-feedback",
       ["feedback.type", "user.name", "alert.id", "feedback.verdict", "service.name", "cloud.provider",
        "http.route", "anomaly.kind", "silence.start", "silence.end", "feedback.note", "feedback.removed"],
       ["@timestamp", "desc"])
lens("apiwatch-feedback-timeline", "Answers over time by kind", "apiwatch-feedback", ("bar_stacked", "t", ["n"], "k"),
     {"k": col("terms", "feedback.type", "Kind", orderBy={"type": "alphabetical"}, orderDirection="asc"),
      "t": col("date_histogram", "@timestamp", "Time"), "n": col("count", label="Answers")})
lens("apiwatch-feedback-who", "Who answered, and how", "apiwatch-feedback", ("bar_horizontal", "u", ["n"], "k"),
     {"u": col("terms", "user.name", "Who", size=15, orderBy={"type": "column", "columnId": "n"}),
      "k": col("terms", "feedback.type", "Kind", orderBy={"type": "alphabetical"}, orderDirection="asc"),
      "n": col("count", label="Answers")})
dashboard("apiwatch-dashboard-alerts", "apiwatch: alerts",
          "What is open now by priority, how alerts came and went, the list with its answering links, "
          "and what people answered (by mail link, PagerDuty, the API or the command line).",
          [("lens", "apiwatch-alerts-open", 16, 12), ("lens", "apiwatch-alerts-timeline", 32, 12),
           ("search", "apiwatch-alerts-list", 48, 20), ("lens", "apiwatch-feedback-timeline", 28, 12),
           ("lens", "apiwatch-feedback-who", 20, 12), ("search", "apiwatch-feedback-list", 48, 16)],
          controls=("alert.status", "alert.priority"), view="apiwatch-alerts")

# (e) Onboarded services.
lens("apiwatch-services-readiness", "Services by baseline readiness", "apiwatch-services", ("bar_horizontal", "b", ["n"], "p"),
     {"b": col("terms", "baseline", "Baseline", orderBy={"type": "column", "columnId": "n"}),
      "p": col("terms", "cloud.provider", "Provider", orderBy={"type": "column", "columnId": "n"}),
      "n": col("count", label="Services")})
lens("apiwatch-services-count", "Services onboarded", "apiwatch-services", ("metric", "n"),
     {"n": col("unique_count", "service.name", "Services")})
search("apiwatch-services-list", "Onboarded services", "apiwatch-services",
       ["service.name", "cloud.provider", "baseline", "first_seen", "last_seen", "calls", "windows", "routes.http.route"],
       ["first_seen", "desc"])
dashboard("apiwatch-dashboard-services", "apiwatch: onboarded services",
          "Every service apiwatch found in the logs, when, and whether its baselines are ready.",
          [("lens", "apiwatch-services-count", 12, 10), ("lens", "apiwatch-services-readiness", 36, 10),
           ("search", "apiwatch-services-list", 48, 20)],
          controls=("cloud.provider", "baseline"), view="apiwatch-services")

with open(OUT, "w") as f:
    for o in objects:
        f.write(json.dumps(o, separators=(",", ":"), sort_keys=True) + "\n")
print(f"wrote {len(objects)} objects to {os.path.normpath(OUT)}")
