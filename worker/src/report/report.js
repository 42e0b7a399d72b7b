// Draws the apiwatch report from the JSON in #apiwatch-data. Text from the logs is only ever set
// with textContent or as attribute values, never parsed as markup. When done, <body> carries
// data-status="ok" and counts of what was drawn (read by the headless-browser test).
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var LANES = [
    { key: "traffic", label: "calls", field: "calls", height: 84 },
    { key: "errors", label: "5xx %", field: "error_pct", height: 64 },
    { key: "latency", label: "p95 ms", field: "p95_ms", height: 84 }
  ];
  var STRIP = 16; // the lane of single-call and call-order findings
  var AXIS = 18;
  var LEFT = 96, RIGHT = 12;
  var drawn = { charts: 0, markers: 0, bands: 0, cards: 0 };
  var D, selectedAlert = null;

  function h(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function s(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function time(ms, withDate) {
    var d = new Date(ms);
    var t = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    if (withDate) t = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + t;
    return t;
  }
  function multiDay() { return D.to - D.from > 86400000; }
  function when(ms) { return time(ms, multiDay()); }
  function num(v) {
    if (v === null || v === undefined) return "–";
    var a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    if (a >= 10 || v === Math.round(v)) return String(Math.round(v));
    return v.toFixed(2);
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 4, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }
  function label(service, provider) { return service + "/" + provider; }

  var tip = document.getElementById("tip");
  function showTip(ev, text) {
    tip.textContent = text;
    tip.hidden = false;
    var x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    var y = ev.clientY + 14;
    if (y + tip.offsetHeight > window.innerHeight) y = ev.clientY - tip.offsetHeight - 10;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function hideTip() { tip.hidden = true; }

  function header() {
    document.getElementById("title").textContent = D.title;
    document.getElementById("range").textContent =
      time(D.from, true) + " – " + time(D.to, true) + " UTC · one point = " + num(D.step_ms / 60000) + " min · from " + D.source;
    var tiles = document.getElementById("tiles");
    function tile(value, what, bad) {
      var t = h("div", { class: "tile" + (bad ? " bad" : "") });
      t.appendChild(h("b", {}, value));
      t.appendChild(h("span", { class: "muted" }, what));
      tiles.appendChild(t);
    }
    var open = D.alerts.filter(function (a) { return a.status === "open"; }).length;
    var urgent = D.alerts.filter(function (a) { return a.priority === "P1" || a.priority === "P2"; }).length;
    tile(D.services.length, "services");
    tile(D.alerts.length, "alerts (" + open + " open)", open > 0);
    tile(urgent, "at P1/P2", urgent > 0);
    tile(num(D.anomalies_total), "anomalies");
    tile(D.journeys.length, "example journeys");
    if (D.rejected_lines > 0) tile(num(D.rejected_lines), "input lines skipped (rejected.ndjson)", true);
  }

  function alertsTable() {
    var box = document.getElementById("alerts");
    if (!D.alerts.length) {
      box.appendChild(h("div", { class: "empty" }, "No alerts in this period."));
      return;
    }
    var t = h("table", { id: "alert-table" });
    var head = h("tr");
    ["", "status", "span", "origin", "what", "impact"].forEach(function (c) { head.appendChild(h("th", {}, c)); });
    t.appendChild(head);
    D.alerts.forEach(function (a, i) {
      var r = h("tr", { class: "alert-row", "data-alert": i });
      var p = h("td");
      p.appendChild(h("span", { class: "badge " + a.priority }, a.priority));
      r.appendChild(p);
      var st = h("td");
      // A forecast that came true or passed is no longer a prediction: say what it is now.
      var status = a.predicted && a.status !== "resolved" ? "predicted" : a.status;
      st.appendChild(h("span", { class: "badge " + a.status, title: a.predicted ? "raised as a forecast, before any breach" : "" }, status));
      r.appendChild(st);
      r.appendChild(h("td", {}, when(a.start) + " – " + (a.end ? when(a.end) : "now")));
      r.appendChild(h("td", {}, label(a.service, a.provider) + (a.route ? " " + a.route : "")));
      var what = h("td");
      what.appendChild(h("div", {}, a.title));
      what.appendChild(h("div", { class: "summary", title: "click the row for the whole summary" }, a.summary));
      r.appendChild(what);
      r.appendChild(h("td", {}, num(a.impact_calls) + " calls, " + num(a.impact_users) + " users"));
      r.addEventListener("click", function () { selectAlert(i, true); });
      t.appendChild(r);
    });
    box.appendChild(t);
    box.appendChild(h("p", { class: "note" },
      "Click a row for its whole summary. An alert's span starts with the earliest window its evidence covers: " +
      "a trend or a sequential test looks back over several minutes, so a span can begin before the alert was raised."));
  }

  function selectAlert(i, scroll) {
    selectedAlert = selectedAlert === i ? null : i;
    document.querySelectorAll("tr.alert-row").forEach(function (r) {
      r.classList.toggle("selected", Number(r.getAttribute("data-alert")) === selectedAlert);
    });
    document.querySelectorAll("svg .band").forEach(function (b) {
      b.classList.toggle("selected", Number(b.getAttribute("data-alert")) === selectedAlert);
    });
    document.querySelectorAll(".card").forEach(function (c) { c.classList.remove("focus"); });
    if (selectedAlert === null) return;
    var a = D.alerts[selectedAlert];
    var card = document.querySelector('.card[data-service="' + CSS.escape(label(a.service, a.provider)) + '"]');
    if (card) {
      card.classList.add("focus");
      card.classList.remove("hidden");
      if (scroll) card.scrollIntoView({ behavior: "smooth", block: "center" });
    }
  }

  function serviceCard(svc, width) {
    var name = label(svc.service, svc.provider);
    var card = h("div", { class: "card", "data-service": name });
    var title = h("h3");
    title.appendChild(document.createTextNode(svc.service));
    title.appendChild(h("span", { class: "sub" }, svc.provider + " · " + num(svc.total_calls) + " calls" +
      (svc.alerts ? " · " + svc.alerts + " alert" + (svc.alerts > 1 ? "s" : "") : "")));
    card.appendChild(title);

    var plotW = width - LEFT - RIGHT;
    var n = svc.calls.length;
    var span = Math.max(1, D.to - D.from);
    function x(t) { return LEFT + (t - D.from) / span * plotW; }
    function xi(i) { return x(D.from + (i + 0.5) * D.step_ms); }
    var total = LANES.reduce(function (acc, l) { return acc + l.height + 8; }, 0) + STRIP + AXIS;
    var svg = s("svg", { viewBox: "0 0 " + width + " " + total, height: total, role: "img", "aria-label": name + " timelines" });

    // Alert spans behind everything, over all lanes.
    var mine = [];
    D.alerts.forEach(function (a, i) {
      if (a.scope.indexOf(name) < 0) return;
      mine.push(i);
      var x0 = x(a.start), x1 = x(a.end || D.to);
      var b = s("rect", { class: "band " + a.priority, x: x0, y: 0, width: Math.max(2, x1 - x0), height: total - AXIS, "data-alert": i });
      b.appendChild(s("title", {}, a.priority + " " + a.title));
      b.addEventListener("click", function () { selectAlert(i, false); });
      svg.appendChild(b);
      drawn.bands++;
    });

    var top = 0, laneY = {};
    LANES.forEach(function (lane) {
      var values = svc[lane.field];
      var max = niceMax(Math.max.apply(null, values.map(function (v) { return v === null ? 0 : v; })));
      var y0 = top + lane.height;
      function y(v) { return y0 - v / max * (lane.height - 6); }
      laneY[lane.key] = { y: y, top: top, bottom: y0, values: values };
      var g = s("g", { "data-chart": lane.key });
      [0, 0.5, 1].forEach(function (f) {
        var gy = y(max * f);
        g.appendChild(s("line", { class: "grid", x1: LEFT, x2: LEFT + plotW, y1: gy, y2: gy }));
        g.appendChild(s("text", { x: LEFT - 6, y: gy + 4, "text-anchor": "end" }, num(max * f)));
      });
      g.appendChild(s("text", { x: 2, y: top + 12 }, lane.label));
      // The line, broken where there is no data; under traffic, an area per unbroken run.
      var d = "", area = "", run = "", lastX = 0, pen = false, points = 0;
      for (var i = 0; i <= n; i++) {
        var v = i < n ? values[i] : null;
        if (v === null) {
          if (pen && lane.key === "traffic") area += "M" + run.slice(1) + "L" + lastX + " " + y0 + "Z";
          pen = false;
          run = "";
          continue;
        }
        var px = xi(i).toFixed(1), py = y(v).toFixed(1);
        if (!pen) run = "L" + px + " " + y0;
        run += "L" + px + " " + py;
        d += (pen ? "L" : "M") + px + " " + py;
        lastX = px;
        pen = true;
        points++;
      }
      if (area) g.appendChild(s("path", { class: "area traffic", d: area }));
      g.appendChild(s("path", { class: "line " + lane.key, d: d, "data-points": points }));
      svg.appendChild(g);
      drawn.charts++;
      top = y0 + 8;
    });
    var stripY = top + STRIP / 2;
    svg.appendChild(s("text", { x: 2, y: stripY + 4 }, "calls/order"));
    svg.appendChild(s("line", { class: "grid", x1: LEFT, x2: LEFT + plotW, y1: stripY, y2: stripY }));
    top += STRIP;

    // Time axis.
    var ticks = Math.max(2, Math.floor(plotW / 110));
    for (var k = 0; k <= ticks; k++) {
      var t = D.from + span * k / ticks;
      svg.appendChild(s("text", { x: x(t), y: top + 13, "text-anchor": k === 0 ? "start" : k === ticks ? "end" : "middle" }, when(t)));
    }

    // Anomaly markers on the lane of what they are about.
    D.anomalies.forEach(function (m) {
      if (m.service !== svc.service || m.provider !== svc.provider) return;
      var mid = (m.start + m.end) / 2, cx = x(mid), cy;
      var i = Math.floor((m.start - D.from) / D.step_ms);
      if (m.lane === "calls") {
        cy = stripY;
      } else {
        var L = laneY[m.lane], v = L.values[i];
        cy = v === null || v === undefined ? L.top + 8 : L.y(v);
      }
      var r = 2.5 + Math.min(1, m.score / 100) * 4;
      var c = s("circle", { class: "marker " + m.severity, cx: cx.toFixed(1), cy: cy.toFixed(1), r: r.toFixed(1), "data-kind": m.kind });
      var text = time(m.start, multiDay()) + " " + m.kind + " · " + m.detector + " · score " + Math.round(m.score) +
        (m.route ? "\n" + m.route : "") + "\n" + m.reason + (m.alert !== null ? "\nevidence for " + D.alerts[m.alert].priority + " " + D.alerts[m.alert].title : "");
      c.addEventListener("mousemove", function (ev) { ev.stopPropagation(); showTip(ev, text); });
      c.addEventListener("mouseleave", hideTip);
      if (m.alert !== null) c.addEventListener("click", function () { selectAlert(m.alert, true); });
      svg.appendChild(c);
      drawn.markers++;
    });

    // Hover readout: the values of all lanes at the pointer.
    var cursor = s("line", { class: "cursor", y1: 0, y2: top, x1: -10, x2: -10 });
    svg.appendChild(cursor);
    svg.addEventListener("mousemove", function (ev) {
      var box = svg.getBoundingClientRect();
      var px = (ev.clientX - box.left) / box.width * width;
      var i = Math.floor(((px - LEFT) / plotW * span) / D.step_ms);
      if (i < 0 || i >= n) { hideTip(); return; }
      cursor.setAttribute("x1", xi(i));
      cursor.setAttribute("x2", xi(i));
      var bands = mine.filter(function (a) {
        var t = D.from + i * D.step_ms, A = D.alerts[a];
        return t + D.step_ms > A.start && t < (A.end || D.to);
      }).map(function (a) { return "\n" + D.alerts[a].priority + " " + D.alerts[a].title; }).join("");
      showTip(ev, when(D.from + i * D.step_ms) + " UTC\ncalls " + num(svc.calls[i]) + " · 5xx " +
        num(svc.error_pct[i]) + "% · p95 " + num(svc.p95_ms[i]) + " ms" + bands);
    });
    svg.addEventListener("mouseleave", function () { cursor.setAttribute("x1", -10); cursor.setAttribute("x2", -10); hideTip(); });
    card.appendChild(svg);
    drawn.cards++;
    return card;
  }

  function services() {
    var box = document.getElementById("services");
    box.textContent = "";
    drawn.charts = drawn.markers = drawn.bands = drawn.cards = 0;
    if (!D.services.length) {
      box.appendChild(h("div", { class: "empty" }, "No service metrics in this directory."));
      return;
    }
    var width = Math.max(600, Math.round(box.clientWidth || 1200));
    D.services.forEach(function (svc) { box.appendChild(serviceCard(svc, width)); });
    applyFilter();
    if (selectedAlert !== null) { var keep = selectedAlert; selectedAlert = null; selectAlert(keep, false); }
  }

  function applyFilter() {
    var q = document.getElementById("filter").value.trim().toLowerCase();
    var only = document.getElementById("only-alerted").checked;
    document.querySelectorAll("#services .card").forEach(function (c, i) {
      var svc = D.services[i];
      var hit = !q || c.getAttribute("data-service").toLowerCase().indexOf(q) >= 0;
      c.classList.toggle("hidden", !hit || (only && !svc.alerts));
    });
  }

  function journeys() {
    var pick = document.getElementById("journey-pick");
    if (!D.journeys.length) {
      pick.disabled = true;
      document.getElementById("journey").appendChild(h("div", { class: "empty" }, "No journeys were reconstructed (no trace ids in the input?)."));
      return;
    }
    D.journeys.forEach(function (j, i) {
      pick.appendChild(h("option", { value: i }, when(j.start) + " " + j.route + " · " + num(j.duration_ms) + " ms · trace " + j.trace_id));
    });
    pick.addEventListener("change", function () { waterfall(Number(pick.value)); });
    waterfall(0);
  }

  function waterfall(k) {
    var j = D.journeys[k];
    var box = document.getElementById("journey");
    box.textContent = "";
    document.getElementById("journey-why").textContent = "Shown because it is " + j.why + "." + (j.failed ? " The journey failed." : "");
    var width = Math.max(600, Math.round(box.clientWidth || 1200));
    var labelW = 230, row = 24, plotW = width - labelW - 80;
    var end = j.bars.reduce(function (m, b) { return Math.max(m, b.start_ms + b.duration_ms); }, j.duration_ms) || 1;
    var svg = s("svg", { viewBox: "0 0 " + width + " " + (j.bars.length * row + 26), height: j.bars.length * row + 26, id: "waterfall", "data-journey": j.id, role: "img", "aria-label": "journey waterfall" });
    function x(ms) { return labelW + ms / end * plotW; }
    for (var q = 0; q <= 4; q++) {
      var gx = x(end * q / 4);
      svg.appendChild(s("line", { class: "grid", x1: gx, x2: gx, y1: 0, y2: j.bars.length * row }));
      svg.appendChild(s("text", { x: gx, y: j.bars.length * row + 16, "text-anchor": "middle" }, num(end * q / 4) + " ms"));
    }
    j.bars.forEach(function (b, i) {
      var y = i * row + 4;
      var depthLabel = (b.caller ? "↳ " : "") + b.label;
      svg.appendChild(s("text", { class: "label", x: 4, y: y + 13 }, depthLabel.length > 34 ? depthLabel.slice(0, 33) + "…" : depthLabel));
      var known = ["aws", "azure", "gcp", "onprem"].indexOf(b.provider) >= 0 ? b.provider : "other";
      var rect = s("rect", {
        class: "bar " + known + (b.failed ? " failed" : "") + (b.marked ? " marked" : ""),
        x: x(b.start_ms).toFixed(1), y: y, height: row - 8, width: Math.max(2, x(b.start_ms + b.duration_ms) - x(b.start_ms)).toFixed(1)
      });
      var text = (b.caller ? b.caller + " → " : "entry: ") + b.label + "\nstarts at " + num(b.start_ms) + " ms, takes " + num(b.duration_ms) +
        " ms (" + Math.round(100 * b.duration_ms / (j.duration_ms || 1)) + "% of the journey)" +
        (b.cross_provider ? "\ncrosses providers" : "") + (b.failed ? "\nfailed (5xx)" : "") + (b.marked ? "\nthe hop that was flagged" : "");
      rect.addEventListener("mousemove", function (ev) { showTip(ev, text); });
      rect.addEventListener("mouseleave", hideTip);
      svg.appendChild(rect);
      svg.appendChild(s("text", { x: x(b.start_ms + b.duration_ms) + 6, y: y + 13 }, num(b.duration_ms) + " ms" + (b.cross_provider ? " ⇄" : "")));
    });
    box.appendChild(svg);
    var legend = h("div", { class: "legend", id: "waterfall-legend" });
    [["aws", "AWS"], ["azure", "Azure"], ["gcp", "Google Cloud"], ["onprem", "on-premises or other"]].forEach(function (p) {
      var key = s("svg", { width: 14, height: 10 });
      key.appendChild(s("rect", { class: "swatch " + p[0], x: 0, y: 0, width: 14, height: 10 }));
      var item = h("span", { class: "item" });
      item.appendChild(key);
      item.appendChild(document.createTextNode(" " + p[1]));
      legend.appendChild(item);
    });
    legend.appendChild(h("span", { class: "item failed-key" }, "red outline: the call failed (5xx)"));
    legend.appendChild(h("span", { class: "item marked-key" }, "dashed outline: the hop that was flagged"));
    legend.appendChild(h("span", { class: "item" }, "↳ called by the row above it · ⇄ crosses providers · hover a bar for its times"));
    box.appendChild(legend);
    document.body.setAttribute("data-waterfall-bars", j.bars.length);
  }

  function onboarded() {
    var box = document.getElementById("onboarded");
    if (!D.onboarded.length) {
      box.appendChild(h("div", { class: "empty" }, "services.json was not found or lists no service."));
      return;
    }
    var t = h("table");
    var head = h("tr");
    ["service", "provider", "first seen", "calls", "routes", "baseline"].forEach(function (c) { head.appendChild(h("th", {}, c)); });
    t.appendChild(head);
    D.onboarded.forEach(function (o) {
      var r = h("tr");
      [o.service, o.provider, when(o.first_seen), num(o.calls), o.routes, o.baseline].forEach(function (v) { r.appendChild(h("td", {}, v)); });
      t.appendChild(r);
    });
    box.appendChild(t);
  }

  function finish() {
    var b = document.body;
    b.setAttribute("data-cards", drawn.cards);
    b.setAttribute("data-charts", drawn.charts);
    b.setAttribute("data-markers", drawn.markers);
    b.setAttribute("data-bands", drawn.bands);
    b.setAttribute("data-alert-rows", document.querySelectorAll("tr.alert-row").length);
    b.setAttribute("data-status", "ok");
  }

  try {
    D = JSON.parse(document.getElementById("apiwatch-data").textContent);
    header();
    alertsTable();
    services();
    journeys();
    onboarded();
    document.getElementById("footer").textContent = "Written by apiwatch report at " + D.generated +
      ". Self-contained: the data is inside this file; nothing is loaded from the network.";
    document.getElementById("filter").addEventListener("input", applyFilter);
    document.getElementById("only-alerted").addEventListener("change", applyFilter);
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () { services(); finish(); }, 150);
    });
    finish();
  } catch (e) {
    document.body.setAttribute("data-status", "failed");
    var m = h("p", { class: "warn" }, "The report could not be drawn: " + e.message);
    document.querySelector("main").prepend(m);
    throw e;
  }
})();
