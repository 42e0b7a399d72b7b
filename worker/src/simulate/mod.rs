//! Realistic multi-environment API traffic with labelled incidents. Users arrive with a diurnal
//! rhythm, follow typical flows through entry gateways, and each entry call fans out into a
//! request journey across services in onprem, aws, azure and gcp (trace, span and parent ids;
//! log-normal latencies; network cost on cross-provider hops; payload sizes; status codes). A
//! small share of events is written late, as shippers do. Seeded and reproducible.

// The simulator draws from collections it has just checked to be non-empty; an `expect` there
// names the invariant, and a broken invariant is a bug in the lab tool, not in the product.
#![allow(clippy::expect_used)]

pub mod incidents;
pub mod topology;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};

use crate::model::time::{Millis, HOUR_MS};
use crate::model::Event;
use incidents::{Effect, Labels, Scheduled};
use topology::Topology;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub topology: String,
    pub start: Millis,
    pub duration: Millis,
    /// Mean entry calls per second (the diurnal cycle swings around it).
    pub rate: f64,
    pub incidents: bool,
    /// Stop after this many events (benchmarks).
    pub max_events: Option<u64>,
    /// Add daily routines that look like problems and are not (see `incidents::routines`).
    pub routines: bool,
    /// Which family of scenarios to plan.
    pub family: incidents::Family,
    /// How much services' own time follows the load: durations scale by load^exponent (0 = not
    /// at all, the families as they were; 0.5 makes the afternoon peak's p95 about 1.9x the
    /// night's, as queueing does on real APIs).
    pub latency_follows_load: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            topology: "bank".into(),
            // 2026-03-02T00:00:00Z
            start: 1_772_409_600_000,
            duration: 3 * HOUR_MS,
            rate: 20.0,
            incidents: true,
            max_events: None,
            routines: false,
            family: incidents::Family::Classic,
            latency_follows_load: 0.0,
        }
    }
}

struct User {
    id: String,
    ip: String,
    agent: &'static str,
    entry: usize,
}

struct Session {
    user: usize,
    flow: usize,
    step: usize,
    skip: Vec<usize>,
}

const AGENTS: [(&str, f64); 6] = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        0.35,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        0.2,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        0.2,
    ),
    ("MyBankApp/5.12.0 (Android 14; Pixel 8)", 0.15),
    ("okhttp/4.12.0", 0.07),
    ("python-requests/2.32.3", 0.03),
];

#[derive(Default)]
struct SessionState {
    sessions: Vec<Option<Session>>,
    free: Vec<usize>,
    steps: BinaryHeap<Reverse<(Millis, usize)>>,
}

/// The simulator.
pub struct Simulator {
    cfg: SimConfig,
    topo: Topology,
    rng: ChaCha8Rng,
    users: Vec<User>,
    plan: Vec<Scheduled>,
    /// Entry route index by (entry service, step name).
    entry_routes: rustc_hash::FxHashMap<(usize, &'static str), usize>,
    lat_noise: LogNormal<f64>,
    size_noise: LogNormal<f64>,
}

/// Diurnal load factor: about 0.45 at night, 1.55 mid-afternoon (UTC).
pub fn diurnal(t: Millis) -> f64 {
    let h = crate::model::time::hour_of_day(t);
    1.0 + 0.55 * ((h - 9.0) / 24.0 * std::f64::consts::TAU).sin()
}

/// Weekly load factor of the ops family: weekends (Saturday, Sunday UTC) carry 60% of a
/// weekday's traffic.
pub fn weekly(t: Millis) -> f64 {
    // 1970-01-01 was a Thursday: day 0 + 3 is a Sunday in this count, Monday is 0.
    let weekday = (t.div_euclid(crate::model::time::DAY_MS) + 3).rem_euclid(7);
    if weekday >= 5 {
        0.6
    } else {
        1.0
    }
}

impl Simulator {
    /// The family's load at `t`: the diurnal cycle, and quieter weekends in the ops family.
    fn load(&self, t: Millis) -> f64 {
        match self.cfg.family {
            incidents::Family::Classic => diurnal(t),
            incidents::Family::Ops => diurnal(t) * weekly(t),
        }
    }

    pub fn new(cfg: SimConfig) -> anyhow::Result<Self> {
        let topo = topology::topology(&cfg.topology)
            .ok_or_else(|| anyhow::anyhow!("unknown topology `{}`; choose one of {:?}", cfg.topology, topology::TOPOLOGIES))?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut plan = if cfg.incidents {
            incidents::plan(&topo, cfg.start, cfg.start + cfg.duration, cfg.family, &mut rng)
        } else {
            // Even without incidents, a new service still appears.
            incidents::plan(&topo, cfg.start, cfg.start + cfg.duration, cfg.family, &mut rng)
                .into_iter()
                .filter(|s| s.effect.is_none())
                .collect()
        };
        if cfg.routines {
            plan.extend(incidents::routines(&topo, cfg.start, cfg.start + cfg.duration, cfg.seed));
            plan.sort_by_key(|s| s.start);
        }
        let entries: Vec<usize> = (0..topo.services.len()).filter(|&i| topo.services[i].entry_share > 0.0).collect();
        let n_users = ((cfg.rate * 600.0) as usize).clamp(200, 200_000);
        let users = (0..n_users)
            .map(|_| {
                let mut x: f64 = rng.gen();
                let mut entry = entries[0];
                for &e in &entries {
                    if x < topo.services[e].entry_share {
                        entry = e;
                        break;
                    }
                    x -= topo.services[e].entry_share;
                }
                let mut a: f64 = rng.gen();
                let mut agent = AGENTS[0].0;
                for (s, w) in AGENTS {
                    if a < w {
                        agent = s;
                        break;
                    }
                    a -= w;
                }
                User {
                    id: format!("u{:08}", rng.gen_range(10_000_000..99_999_999u32)),
                    ip: format!(
                        "{}.{}.{}.{}",
                        [81, 86, 92, 145, 176][rng.gen_range(0..5)],
                        rng.gen_range(0..256),
                        rng.gen_range(0..256),
                        rng.gen_range(1..255)
                    ),
                    agent,
                    entry,
                }
            })
            .collect();
        // Each flow step (`METHOD path`) resolved to its route on every entry service, once.
        let mut entry_routes = rustc_hash::FxHashMap::default();
        for flow in &topo.flows {
            for &step in &flow.steps {
                for (i, r) in topo.routes.iter().enumerate() {
                    if topo.services[r.service].entry_share > 0.0 && step.split_once(' ') == Some((r.method, r.path)) {
                        entry_routes.insert((r.service, step), i);
                    }
                }
            }
        }
        Ok(Simulator {
            cfg,
            topo,
            rng,
            users,
            plan,
            entry_routes,
            lat_noise: LogNormal::new(0.0, 0.35).expect("valid"),
            size_noise: LogNormal::new(0.0, 0.25).expect("valid"),
        })
    }

    pub fn labels(&self, events: u64) -> Labels {
        Labels {
            seed: self.cfg.seed,
            topology: self.cfg.topology.clone(),
            start: self.cfg.start,
            end: self.cfg.start + self.cfg.duration,
            family: self.cfg.family,
            events,
            incidents: self.plan.iter().map(|s| s.label.clone()).collect(),
        }
    }

    fn active(&self, t: Millis) -> impl Iterator<Item = &Effect> {
        self.plan
            .iter()
            .filter(move |s| s.start <= t && t < s.end)
            .filter_map(|s| s.effect.as_ref())
    }

    fn service_present(&self, s: usize, t: Millis) -> bool {
        match self.topo.services[s].appears_at {
            None => true,
            Some(f) => t >= self.cfg.start + (self.cfg.duration as f64 * f) as Millis,
        }
    }

    /// Runs the simulation, handing events to `emit` in (nearly) time order. Returns the count.
    pub fn run(&mut self, mut emit: impl FnMut(&Event) -> anyhow::Result<()>, mut progress: impl FnMut(Millis)) -> anyhow::Result<u64> {
        let start = self.cfg.start;
        let end = start + self.cfg.duration;
        let mean_steps: f64 = {
            let tw: f64 = self.topo.flows.iter().map(|f| f.weight).sum();
            self.topo.flows.iter().map(|f| f.weight * f.steps.len() as f64).sum::<f64>() / tw
        };
        let max_session_rate = self.cfg.rate / mean_steps * 1.6;
        let gap = Exp::new(max_session_rate).expect("positive rate");
        let think = Exp::new(1.0 / 4.0).expect("positive");
        let mut st = SessionState::default();
        let mut pending: Vec<(Millis, Event)> = Vec::new();
        let mut next_arrival = start as f64;
        let mut count = 0u64;
        let mut last_flush = start;
        loop {
            let step_due = st.steps.peek().map(|r| r.0 .0).filter(|&s| s < end);
            let arrival = next_arrival as Millis;
            let arrival_due = (arrival < end).then_some(arrival);
            let now = match (step_due, arrival_due) {
                (None, None) => break,
                (Some(s), a) if a.is_none_or(|a| s <= a) => {
                    let Reverse((t, id)) = st.steps.pop().expect("peeked");
                    self.advance(t, id, &mut st, &think, &mut pending);
                    s
                }
                _ => {
                    next_arrival += gap.sample(&mut self.rng) * 1000.0;
                    // Thinning: accept arrivals in proportion to the diurnal rate.
                    let load = self.load(arrival);
                    if self.rng.gen::<f64>() < load / 1.6 {
                        self.arrive(arrival, &mut st);
                    }
                    arrival
                }
            };
            if now - last_flush >= 10_000 {
                count += flush(&mut pending, now - 60_000, self.cfg.max_events.map(|m| m - count), &mut emit)?;
                last_flush = now;
                progress(now);
                if self.cfg.max_events.is_some_and(|m| count >= m) {
                    return Ok(count);
                }
            }
        }
        count += flush(
            &mut pending,
            Millis::MAX,
            self.cfg.max_events.map(|m| m.saturating_sub(count)),
            &mut emit,
        )?;
        Ok(count)
    }

    /// A new session starts at `now`, unless an incident drops it.
    fn arrive(&mut self, now: Millis, st: &mut SessionState) {
        let user = self.rng.gen_range(0..self.users.len());
        let flow = self.pick_flow();
        let entry = self.users[user].entry;
        let mut skip = Vec::new();
        let effects: Vec<Effect> = self.active(now).cloned().collect();
        for e in &effects {
            match e {
                Effect::Drop { entry: en, probability } if *en == entry && self.rng.gen::<f64>() < *probability => return,
                Effect::SkipSteps {
                    entry: en,
                    flow: f,
                    skip: s,
                    probability,
                } if *en == entry && *f == flow && self.rng.gen::<f64>() < *probability => skip = s.clone(),
                _ => {}
            }
        }
        let s = Session { user, flow, step: 0, skip };
        let id = match st.free.pop() {
            Some(i) => {
                st.sessions[i] = Some(s);
                i
            }
            None => {
                st.sessions.push(Some(s));
                st.sessions.len() - 1
            }
        };
        st.steps.push(Reverse((now, id)));
    }

    /// Session `id` takes its next step at `t`.
    fn advance(&mut self, t: Millis, id: usize, st: &mut SessionState, think: &Exp<f64>, pending: &mut Vec<(Millis, Event)>) {
        let s = st.sessions[id].as_mut().expect("live session");
        while s.skip.contains(&s.step) {
            s.step += 1;
        }
        let (user, flow, step) = (s.user, s.flow, s.step);
        s.step += 1;
        let Some(&step_name) = self.topo.flows[flow].steps.get(step) else {
            st.sessions[id] = None;
            st.free.push(id);
            return;
        };
        let entry = self.users[user].entry;
        if let Some(&route) = self.entry_routes.get(&(entry, step_name)) {
            self.journey(t, user, route, pending);
        }
        let wait = (1.0 + think.sample(&mut self.rng)) * 1000.0;
        st.steps.push(Reverse((t + wait as Millis, id)));
    }

    fn pick_flow(&mut self) -> usize {
        let total: f64 = self.topo.flows.iter().map(|f| f.weight).sum();
        let mut x = self.rng.gen::<f64>() * total;
        for (i, f) in self.topo.flows.iter().enumerate() {
            if x < f.weight {
                return i;
            }
            x -= f.weight;
        }
        self.topo.flows.len() - 1
    }

    fn hex(&mut self, n: usize) -> String {
        const H: &[u8; 16] = b"0123456789abcdef";
        (0..n).map(|_| H[self.rng.gen_range(0..16)] as char).collect()
    }

    fn fill_path(&mut self, template: &str) -> String {
        if !template.contains("{id}") {
            return template.to_owned();
        }
        let mut out = String::with_capacity(template.len() + 16);
        for (i, part) in template.split("{id}").enumerate() {
            if i > 0 {
                if self.rng.gen_bool(0.5) {
                    out.push_str(&self.rng.gen_range(10_000_000..99_999_999u32).to_string());
                } else {
                    let h = self.hex(32);
                    out.push_str(&format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]));
                }
            }
            out.push_str(part);
        }
        out
    }

    /// Generates one request journey starting at `t` on an entry route.
    fn journey(&mut self, t: Millis, user: usize, route: usize, out: &mut Vec<(Millis, Event)>) {
        let trace = self.hex(32);
        let span = self.hex(16);
        self.call(t, route, &trace, span, None, user, out);
    }

    /// Generates a call and its downstream calls; returns (duration ms, failed).
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        t: Millis,
        route: usize,
        trace: &str,
        span: String,
        parent: Option<(String, usize)>,
        user: usize,
        out: &mut Vec<(Millis, Event)>,
    ) -> (f64, bool) {
        let r = self.topo.routes[route].clone();
        let svc = r.service;
        let effects: Vec<Effect> = self.active(t).cloned().collect();
        // A hanging dependency answers after the timeout and calls nothing on.
        let hang_ms = effects.iter().find_map(|e| match e {
            Effect::Timeout { service, after_ms, rate } if *service == svc && self.rng.gen::<f64>() < *rate => Some(*after_ms),
            _ => None,
        });
        // Downstream calls, in order.
        // The service's own time, longer under load where the run says so (`powf(0)` is 1).
        let busy = self.load(t).powf(self.cfg.latency_follows_load);
        let mut offset = r.self_ms * 0.3 * self.lat_noise.sample(&mut self.rng) * busy;
        let calls: &[usize] = if hang_ms.is_some() { &[] } else { &r.calls };
        let child_failed = self.call_downstream(calls, (t, &mut offset), (trace, &span, svc), user, &effects, out);
        let own = r.self_ms * self.lat_noise.sample(&mut self.rng) * 0.7 * busy;
        let mut duration = offset + own;
        let mut error_rate = r.error_rate;
        let mut resp_factor = 1.0;
        for e in &effects {
            match e {
                Effect::Slow { service, factor } if *service == svc => duration *= factor,
                Effect::Ramp {
                    service,
                    start,
                    ramp_end,
                    max,
                } if *service == svc => {
                    let f = ((t - start) as f64 / (ramp_end - start).max(1) as f64).clamp(0.0, 1.0);
                    duration *= 1.0 + (max - 1.0) * f;
                }
                Effect::Errors { service, rate } | Effect::Retry { service, rate, .. } if *service == svc => error_rate = *rate,
                Effect::Deploy { service, speedup, .. } if *service == svc => duration *= speedup,
                Effect::Payload { route: pr, factor, share } if *pr == route && self.rng.gen::<f64>() < *share => resp_factor = *factor,
                _ => {}
            }
        }
        if let Some(ms) = hang_ms {
            duration = ms * (0.95 + 0.1 * self.rng.gen::<f64>());
        }
        let is_entry = parent.is_none();
        let failed = hang_ms.is_some() || (child_failed && self.rng.gen::<f64>() < 0.9) || self.rng.gen::<f64>() < error_rate;
        let status: u16 = if failed {
            if hang_ms.is_some() {
                504
            } else if child_failed {
                [502, 503][self.rng.gen_range(0..2)]
            } else {
                [500, 503, 504][self.rng.gen_range(0..3)]
            }
        } else if is_entry && self.rng.gen::<f64>() < 0.01 {
            [401, 404, 429][self.rng.gen_range(0..3)]
        } else if r.method == "POST" && !is_entry {
            201
        } else {
            200
        };
        let mut path = self.fill_path(r.path);
        for e in &effects {
            if let Effect::Deploy { route: dr, share, .. } = e {
                // A second deploy of the route moves no more calls: they are on /v2 already.
                if *dr == route && !path.starts_with("/v2") && self.rng.gen::<f64>() < *share {
                    path.insert_str(0, "/v2");
                }
            }
        }
        let req_b = (r.request_bytes * self.size_noise.sample(&mut self.rng)).round() as u64;
        let resp_b = if failed {
            120
        } else {
            (r.response_bytes * resp_factor * self.size_noise.sample(&mut self.rng)).round() as u64
        };
        let host_n = self.rng.gen_range(1..4);
        let internal_ip = format!("10.{}.0.{}", svc % 250, self.rng.gen_range(2..250));
        let u = &self.users[user];
        let svc_def = &self.topo.services[svc];
        let host = format!("{}-{host_n}", svc_def.name);
        let ev = Event {
            timestamp: t,
            service: svc_def.name.into(),
            provider: svc_def.provider.into(),
            region: Some((svc_def.region.to_owned()).into()),
            host: Some((host).into()),
            method: r.method.into(),
            path: path.into(),
            status,
            duration_ns: Some((duration * 1e6) as u64),
            outcome: Some((if status >= 500 { "failure" } else { "success" }.to_owned()).into()),
            trace_id: Some((trace.to_owned()).into()),
            span_id: Some((span).into()),
            parent_id: parent.map(|p| p.0.into()),
            user_id: Some((u.id.clone()).into()),
            client_ip: Some((if is_entry { u.ip.clone() } else { internal_ip }).into()),
            user_agent: Some(
                (if is_entry {
                    u.agent.to_owned()
                } else {
                    "internal-client/1.0".to_owned()
                })
                .into(),
            ),
            request_bytes: Some(req_b),
            response_bytes: Some(resp_b),
            client: None,
        };
        // A few events reach the log late, as shippers do.
        let write_at = if self.rng.gen::<f64>() < 0.002 {
            t + self.rng.gen_range(5_000..60_000)
        } else {
            t
        };
        out.push((write_at, ev));
        (duration, status >= 500)
    }

    /// Calls `calls` in order from `svc`'s span `span`, moving `offset` (ms after `t`) past each
    /// (retries included); returns whether one failed (the rest are not called).
    #[allow(clippy::too_many_arguments)]
    fn call_downstream(
        &mut self,
        calls: &[usize],
        (t, offset): (Millis, &mut f64),
        (trace, span, svc): (&str, &str, usize),
        user: usize,
        effects: &[Effect],
        out: &mut Vec<(Millis, Event)>,
    ) -> bool {
        let mut child_failed = false;
        for &c in calls {
            let callee = self.topo.routes[c].service;
            if !self.service_present(callee, t) {
                continue;
            }
            let mut net = network_ms(self.topo.services[svc].provider, self.topo.services[callee].provider);
            for e in effects {
                if let Effect::Hop { from, to, add_ms } = e {
                    if *from == svc && *to == callee {
                        net += add_ms * (0.8 + 0.4 * self.rng.gen::<f64>());
                    }
                }
            }
            if effects.iter().any(|e| matches!(e, Effect::Down { service } if *service == callee)) {
                // Connection refused: the caller fails at once, the callee logs nothing.
                *offset += net;
                child_failed = true;
                break;
            }
            let retries = effects
                .iter()
                .find_map(|e| match e {
                    Effect::Retry { service, retries, .. } if *service == callee => Some(*retries),
                    _ => None,
                })
                .unwrap_or(0);
            for _attempt in 0..=retries {
                let child_span = self.hex(16);
                let child_t = t + *offset as Millis;
                let (d, failed) = self.call_with_network(child_t, c, trace, child_span, (span.to_owned(), svc), user, net, out);
                *offset += d;
                child_failed = failed;
                if !failed {
                    break;
                }
            }
            if child_failed {
                break;
            }
        }
        child_failed
    }

    /// A call as seen by its caller: the callee's own duration plus the network both ways.
    #[allow(clippy::too_many_arguments)]
    fn call_with_network(
        &mut self,
        t: Millis,
        route: usize,
        trace: &str,
        span: String,
        parent: (String, usize),
        user: usize,
        net_ms: f64,
        out: &mut Vec<(Millis, Event)>,
    ) -> (f64, bool) {
        let before = out.len();
        let (d, failed) = self.call(t, route, trace, span, Some(parent), user, out);
        // The span of this call measures it from the caller's side (an OpenTelemetry client
        // span): network time included.
        let jitter = net_ms * (0.85 + 0.3 * self.rng.gen::<f64>());
        if let Some((_, ev)) = out[before..].last_mut() {
            ev.duration_ns = ev.duration_ns.map(|d| d + (jitter * 1e6) as u64);
        }
        (d + jitter, failed)
    }
}

/// Round-trip network cost between providers, ms.
pub fn network_ms(a: &str, b: &str) -> f64 {
    if a == b {
        return 0.6;
    }
    let mut pair = [a, b];
    pair.sort();
    match pair {
        ["aws", "onprem"] | ["azure", "onprem"] | ["gcp", "onprem"] => 14.0,
        ["aws", "azure"] => 22.0,
        ["aws", "gcp"] => 18.0,
        ["azure", "gcp"] => 25.0,
        _ => 20.0,
    }
}

/// Writes out, in write order, the pending events written before `cutoff` (at most `limit`).
fn flush(
    pending: &mut Vec<(Millis, Event)>,
    cutoff: Millis,
    limit: Option<u64>,
    emit: &mut impl FnMut(&Event) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    pending.sort_by_key(|(w, e)| (*w, e.timestamp));
    let n = pending
        .partition_point(|(w, _)| *w < cutoff)
        .min(limit.map_or(usize::MAX, |l| l as usize));
    for (_, e) in pending.drain(..n) {
        emit(&e)?;
    }
    Ok(n as u64)
}

/// Simulates into an NDJSON writer; returns the labels.
pub fn simulate_to_writer(cfg: SimConfig, w: &mut dyn Write, progress: impl FnMut(Millis)) -> anyhow::Result<Labels> {
    simulate_to_writer_as(cfg, w, crate::source::LogFormat::Json, progress)
}

/// [`simulate_to_writer`] in another line format: nginx or Apache access logs (one line per
/// call, every service in one file, `svc=`/`cloud=` saying whose line it is).
pub fn simulate_to_writer_as(
    cfg: SimConfig,
    w: &mut dyn Write,
    format: crate::source::LogFormat,
    progress: impl FnMut(Millis),
) -> anyhow::Result<Labels> {
    use crate::source::LogFormat;
    let mut sim = Simulator::new(cfg)?;
    let n = sim.run(
        |e| {
            match format {
                LogFormat::Json | LogFormat::Auto => serde_json::to_writer(&mut *w, e)?,
                other => w.write_all(crate::source::formats::write::line(e, other).as_bytes())?,
            }
            w.write_all(b"\n")?;
            Ok(())
        },
        progress,
    )?;
    w.flush()?;
    Ok(sim.labels(n))
}

/// Simulates into a file (`-`: standard output), creating its directory, and writes the
/// labels beside it when asked; `progress` hears the simulated time.
pub fn to_file(
    cfg: SimConfig,
    output: &std::path::Path,
    labels: Option<&std::path::Path>,
    format: crate::source::LogFormat,
    progress: impl FnMut(Millis),
) -> anyhow::Result<Labels> {
    use anyhow::Context;
    let mut w: Box<dyn Write> = if output.as_os_str() == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = std::fs::File::create(output).with_context(|| format!("cannot create {}", output.display()))?;
        Box::new(std::io::BufWriter::with_capacity(1 << 20, file))
    };
    let l = simulate_to_writer_as(cfg, &mut w, format, progress)?;
    if let Some(p) = labels {
        write_labels(&l, p)?;
    }
    Ok(l)
}

/// Writes the labels of a simulated run as pretty JSON.
pub fn write_labels(labels: &Labels, path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    serde_json::to_writer_pretty(&mut w, labels)?;
    w.flush().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Simulates into memory (tests, demo).
pub fn simulate_events(cfg: SimConfig) -> anyhow::Result<(Vec<Event>, Labels)> {
    let mut sim = Simulator::new(cfg)?;
    let mut v = Vec::new();
    let n = sim.run(
        |e| {
            v.push(e.clone());
            Ok(())
        },
        |_| {},
    )?;
    Ok((v, sim.labels(n)))
}

#[cfg(test)]
mod tests {
    use super::incidents::{Effect, Family, IncidentKind, Scheduled};
    use super::*;
    use crate::model::time::{hour_of_day, parse_rfc3339};

    fn bank(hours: f64, family: Family, incidents: bool) -> SimConfig {
        SimConfig {
            seed: 3,
            topology: "bank".into(),
            duration: (hours * HOUR_MS as f64) as Millis,
            rate: 2.0,
            incidents,
            family,
            ..SimConfig::default()
        }
    }

    #[test]
    fn the_ops_family_plans_every_kind_benign_deploys_unalerted_and_many_at_the_trough() {
        let sim = Simulator::new(bank(168.0, Family::Ops, true)).unwrap();
        let labels = sim.labels(0);
        assert_eq!(labels.family, Family::Ops);
        use IncidentKind as K;
        for kind in IncidentKind::OPS {
            assert!(labels.incidents.iter().any(|i| i.kind == kind), "no {kind:?} in a week");
        }
        assert!(labels
            .incidents
            .iter()
            .all(|i| (i.kind == K::BenignDeploy || i.kind == K::NewService) != i.expect_alert));
        let alerting: Vec<_> = labels.incidents.iter().filter(|i| i.expect_alert).collect();
        let at_trough = alerting.iter().filter(|i| (1.0..5.0).contains(&hour_of_day(i.start))).count();
        // Chance would put a sixth there; moved there by a coin flip when it is near, a quarter.
        assert!(at_trough * 5 >= alerting.len(), "{at_trough} of {} at 01:00-05:00", alerting.len());
        for w in alerting.windows(2) {
            assert!(w[0].end <= w[1].start, "{} and {} overlap", w[0].id, w[1].id);
        }
    }

    #[test]
    fn weekends_carry_less_traffic_in_the_ops_family() {
        let at = |s: &str| parse_rfc3339(s).unwrap();
        assert_eq!(weekly(at("2026-03-02T12:00:00Z")), 1.0, "a Monday");
        assert_eq!(weekly(at("2026-03-06T23:59:00Z")), 1.0, "a Friday");
        assert_eq!(weekly(at("2026-03-07T00:00:00Z")), 0.6, "a Saturday");
        assert_eq!(weekly(at("2026-03-08T12:00:00Z")), 0.6, "a Sunday");
    }

    /// Two hours of the bank with `effect` over the second: the events of the first hour and of
    /// the second.
    fn before_and_during(effect: Effect) -> (Vec<Event>, Vec<Event>) {
        let cfg = bank(2.0, Family::Ops, false);
        let mid = cfg.start + HOUR_MS;
        let mut sim = Simulator::new(cfg.clone()).unwrap();
        sim.plan.retain(|s| s.effect.is_some());
        sim.plan.push(Scheduled {
            label: super::incidents::LabelledIncident {
                id: "inc-01".into(),
                kind: IncidentKind::TotalOutage,
                start: mid,
                end: mid + HOUR_MS,
                service: String::new(),
                provider: String::new(),
                route: None,
                hop_from: None,
                breach_at: None,
                expect_alert: true,
                description: String::new(),
            },
            start: mid,
            end: mid + HOUR_MS,
            effect: Some(effect),
        });
        let mut events = Vec::new();
        sim.run(
            |e| {
                events.push(e.clone());
                Ok(())
            },
            |_| {},
        )
        .unwrap();
        events.into_iter().partition(|e| e.timestamp < mid)
    }

    fn service(name: &str) -> usize {
        let t = topology::topology("bank").unwrap();
        t.services.iter().position(|s| s.name == name).unwrap()
    }

    fn of<'a>(events: &'a [Event], name: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        events.iter().filter(move |e| &*e.service == name)
    }

    #[test]
    fn a_service_down_logs_nothing_and_its_callers_fail() {
        let (before, during) = before_and_during(Effect::Down {
            service: service("ledger"),
        });
        assert!(of(&before, "ledger").count() > 100);
        assert_eq!(of(&during, "ledger").count(), 0);
        let failed = |v: &[Event]| v.iter().filter(|e| e.status >= 500).count() as f64 / v.len() as f64;
        assert!(
            failed(&during) > 3.0 * failed(&before),
            "{} vs {}",
            failed(&during),
            failed(&before)
        );
    }

    #[test]
    fn callers_retry_a_failing_service_so_its_traffic_rises() {
        let (before, during) = before_and_during(Effect::Retry {
            service: service("ledger"),
            rate: 0.4,
            retries: 3,
        });
        let (b, d) = (of(&before, "ledger").count() as f64, of(&during, "ledger").count() as f64);
        // 1 + 0.4 + 0.16 + 0.064 calls per call, about a diurnal hour's change either way.
        assert!(d > 1.35 * b, "{d} calls during, {b} before");
        let errors = of(&during, "ledger").filter(|e| e.status >= 500).count() as f64;
        assert!((0.3..0.5).contains(&(errors / d)), "{errors} of {d} failed");
    }

    #[test]
    fn a_hanging_dependency_fails_after_the_timeout_and_its_callers_wait() {
        let (before, during) = before_and_during(Effect::Timeout {
            service: service("ledger"),
            after_ms: 3_000.0,
            rate: 0.7,
        });
        let hung = of(&during, "ledger").filter(|e| e.status == 504).collect::<Vec<_>>();
        assert!(!hung.is_empty());
        assert!(hung.iter().all(|e| e.duration_ns.unwrap() >= 2_850_000_000));
        let slow = |v: &[Event]| v.iter().filter(|e| e.duration_ns.unwrap_or(0) > 2_000_000_000).count();
        assert_eq!(slow(&before), 0);
        // Callers (other services) wait the timeout out too.
        assert!(during
            .iter()
            .any(|e| &*e.service != "ledger" && e.duration_ns.unwrap_or(0) > 2_850_000_000));
    }

    #[test]
    fn a_deploy_speeds_a_service_up_and_opens_a_v2_route() {
        let t = topology::topology("bank").unwrap();
        let s = service("ledger");
        let route = t.routes.iter().position(|r| r.service == s).unwrap();
        let (before, during) = before_and_during(Effect::Deploy {
            service: s,
            speedup: 0.5,
            route,
            share: 0.33,
        });
        assert!(of(&before, "ledger").all(|e| !e.path.starts_with("/v2")));
        assert!(of(&during, "ledger").any(|e| e.path.starts_with("/v2")));
        let median = |v: &[Event]| {
            let d: Vec<f64> = of(v, "ledger").filter_map(|e| e.duration_ns).map(|d| d as f64).collect();
            crate::detect::stats::median(&d)
        };
        assert!(median(&during) < 0.8 * median(&before));
    }

    #[test]
    fn the_first_family_is_what_it_was() {
        // The same seed plans the same incidents as before families existed.
        let sim = Simulator::new(bank(48.0, Family::Classic, true)).unwrap();
        let kinds: Vec<IncidentKind> = sim.labels(0).incidents.iter().map(|i| i.kind).collect();
        assert!(kinds
            .iter()
            .all(|k| IncidentKind::CLASSIC.contains(k) || *k == IncidentKind::NewService));
    }
}
