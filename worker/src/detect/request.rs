//! Per-request isolation forest. Every call becomes a feature vector (latency against its
//! route's norm, status class, payload sizes against the route's norms, rarity of the client
//! address and of the user agent, hour of day); a forest fitted on a day-spanning sample of calls
//! scores it. Calls above the training set's 99.5th percentile are "unusual"; a route whose share
//! of unusual calls in a window rises well above the background is reported, naming the features
//! that made its calls unusual.

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;

use super::iforest::{ForestParams, IsolationForest};
use super::stats::{column_mean_std, quantile, score_from_z, share_evidence, Ewm, WINDOW_EVIDENCE};
use super::{node_label, CallContext, Detector, Evicted, Finding, WindowContext};
use crate::model::anomaly::{Anomaly, AnomalyKind, Contributor};
use crate::model::time::{hour_of_day, Millis, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::model::{hash_str, EntityKey};

pub use crate::model::features::REQUEST_FEATURES as FEATURES;
const NF: usize = FEATURES.len();
/// Training calls kept per hour of the day.
const PER_HOUR: usize = 4096;
/// Index of the hour-of-day feature.
const HOUR: usize = 6;
/// The first fit waits this long after the first call.
const FIRST_FIT_AFTER: Millis = 10 * MINUTE_MS;
const MIN_TRAIN: usize = 3000;
const REFIT_EVERY: Millis = 6 * HOUR_MS;
/// Calls a route needs before it counts as known to the forest.
const NEW_ROUTE_CALLS: u64 = 300;
/// A route that appears after the first fit is onboarded for this long before the forest judges
/// its calls: a newcomer's clients, payloads and latencies are all new at first, and its
/// appearance alone must not alert. (Routes present at the first fit are judged at once.)
const NEW_ROUTE_GRACE: Millis = 30 * MINUTE_MS;

#[derive(serde::Serialize, serde::Deserialize, Default, Clone, Copy)]
pub(crate) struct RouteNorm {
    pub(crate) latency: Ewm,
    req: Ewm,
    resp: Ewm,
    /// Whether the current forest was fitted with this route's calls in its sample; a route
    /// that appeared since is learned first, scored after the next fit.
    fitted: bool,
    pub(crate) first_seen: Millis,
}

/// How often keys (client addresses, user agents) were seen: a count-min sketch of two rows of
/// saturating 8-bit counters. Memory is fixed (128 KiB, cache-resident) however many distinct
/// keys arrive; a collision can only make a key look more familiar, never rarer.
#[derive(serde::Serialize, serde::Deserialize)]
struct Frequency {
    rows: [Vec<u8>; 2],
}

const SKETCH_BITS: u32 = 16;

impl Default for Frequency {
    fn default() -> Self {
        Frequency {
            rows: [vec![0; 1 << SKETCH_BITS], vec![0; 1 << SKETCH_BITS]],
        }
    }
}

impl Frequency {
    /// Rarity of `key`, `1 / (1 + times seen before)`: 1 for a newcomer, near 0 for the usual
    /// ones. Unlike a share of the total it does not drift as the total grows. Then counts it.
    fn rarity_and_count(&mut self, key: Option<u64>) -> f64 {
        let Some(key) = key else { return 0.0 };
        let mask = (1u64 << SKETCH_BITS) - 1;
        let slots = [(key & mask) as usize, ((key >> 32) & mask) as usize];
        let before = self.rows[0][slots[0]].min(self.rows[1][slots[1]]);
        for (row, &slot) in self.rows.iter_mut().zip(&slots) {
            row[slot] = row[slot].saturating_add(1);
        }
        1.0 / (1.0 + f64::from(before))
    }
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct RouteWindow {
    calls: u64,
    unusual: u64,
    feature_excess: [f64; NF],
    traces: Vec<String>,
    users: FxHashMap<u64, ()>,
}

/// Computes request feature vectors: route norms (latency, payload sizes) and how familiar the
/// client address and user agent are. Shared by the isolation forest, the AutoEncoder and the
/// `apiwatch features` export, so every model sees the same numbers.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct RequestFeaturizer {
    pub(crate) norms: FxHashMap<u32, RouteNorm>,
    ips: Frequency,
    agents: Frequency,
}

impl RequestFeaturizer {
    /// The feature vector of a call (in [`FEATURES`] order), once its route has a norm; also
    /// updates the route norms and key counts.
    pub fn features(&mut self, c: &CallContext<'_>) -> Option<[f64; NF]> {
        let e = c.event;
        let norm = self.norms.entry(c.route_entity).or_insert_with(|| RouteNorm {
            first_seen: e.timestamp,
            ..Default::default()
        });
        // An untimed call (a log without timing) sits at its route's usual latency: neutral to
        // the models, and it does not move the norm.
        let lat = e.duration_ms().map_or(norm.latency.mean, |ms| ms.max(1e-3).ln());
        let req = (1.0 + e.request_bytes.unwrap_or(0) as f64).ln();
        let resp = (1.0 + e.response_bytes.unwrap_or(0) as f64).ln();
        // Every call moves the payload norm; the latency norm only timed ones.
        let warm = norm.req.n >= 20;
        let v = [
            lat - norm.latency.mean,
            if e.status >= 500 {
                2.0
            } else if e.status >= 400 {
                1.0
            } else {
                0.0
            },
            req - norm.req.mean,
            resp - norm.resp.mean,
            self.ips.rarity_and_count(c.event.client_ip.as_deref().map(hash_str)),
            self.agents.rarity_and_count(c.event.user_agent.as_deref().map(hash_str)),
            hour_of_day(e.timestamp),
        ];
        if e.duration_ns.is_some() {
            norm.latency.update(lat, 0.02);
        }
        norm.req.update(req, 0.02);
        norm.resp.update(resp, 0.02);
        warm.then_some(v)
    }

    /// Drops the norms of evicted routes.
    pub fn forget(&mut self, evicted: &super::Evicted) {
        self.norms.retain(|id, _| !evicted.id(*id));
    }

    /// Calls seen on a route so far and when it first appeared.
    pub fn route_age(&self, route_entity: u32) -> Option<(u64, Millis)> {
        self.norms.get(&route_entity).map(|n| (n.latency.n, n.first_seen))
    }
}

/// Per route and window: how many calls a model found unusual, and which features made them so.
/// A route whose share of unusual calls rises well above its background is reported. Shared by
/// the request-level models (isolation forest, AutoEncoder).
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct UnusualTally {
    window: FxHashMap<u32, RouteWindow>,
    keys: FxHashMap<u32, EntityKey>,
    background: FxHashMap<u32, Ewm>,
    /// Windows a route's background learns before its share is judged.
    #[serde(default)]
    warmup_windows: u64,
}

impl UnusualTally {
    /// Drops the tallies and backgrounds of evicted routes.
    pub fn forget(&mut self, evicted: &super::Evicted) {
        self.window.retain(|id, _| !evicted.id(*id));
        self.keys.retain(|id, _| !evicted.id(*id));
        self.background.retain(|id, _| !evicted.id(*id));
    }

    /// A tally that learns each route's usual share of unusual calls for `windows` windows
    /// before judging it: for a model that judges routes from their first calls (the
    /// AutoEncoder), a newly onboarded route's own normal must be learned, not flagged.
    pub fn with_warmup(windows: u64) -> Self {
        UnusualTally {
            warmup_windows: windows,
            ..Default::default()
        }
    }

    /// Counts one judged call; `excess[j]` says how much feature `j` made it unusual.
    pub fn record(&mut self, route_entity: u32, key: EntityKey, unusual: bool, excess: &[f64; NF], trace: Option<&str>, user: Option<u64>) {
        self.keys.entry(route_entity).or_insert(key);
        let w = self.window.entry(route_entity).or_default();
        w.calls += 1;
        if unusual {
            w.unusual += 1;
            for (acc, e) in w.feature_excess.iter_mut().zip(excess) {
                *acc += e;
            }
            if w.traces.len() < 3 {
                if let Some(t) = trace {
                    w.traces.push(t.to_owned());
                }
            }
            if let Some(u) = user {
                w.users.insert(u, ());
            }
        }
    }

    /// Reports the routes whose unusual share stood out this window.
    pub fn close(&mut self, w: &WindowContext<'_>, detector: &'static str, model: &str, out: &mut Vec<Anomaly>) {
        let mut routes: Vec<_> = std::mem::take(&mut self.window).into_iter().collect();
        routes.sort_by_key(|(r, _)| *r);
        for (route, rw) in routes {
            let bg = self.background.entry(route).or_default();
            let p0 = if bg.n >= 10 { bg.mean.max(0.005) } else { 0.01 };
            let rate = rw.unusual as f64 / rw.calls.max(1) as f64;
            let n = rw.calls as f64;
            let z = (rw.unusual as f64 - n * p0) / (n * p0 * (1.0 - p0)).sqrt().max(1e-9);
            let learning = bg.n < self.warmup_windows;
            let flagged = !learning
                && rw.unusual >= 5
                && rate >= 0.05
                && rate >= 4.0 * p0
                && z >= 5.0
                && share_evidence(rw.unusual, rw.calls, p0) >= WINDOW_EVIDENCE;
            bg.update(if flagged { p0 } else { rate }, 0.05);
            if !flagged {
                continue;
            }
            let Some(key) = self.keys.get(&route).copied() else { continue };
            let EntityKey::Route {
                service,
                provider,
                route: r,
            } = key
            else {
                continue;
            };
            let total: f64 = rw.feature_excess.iter().sum::<f64>().max(1e-9);
            let mut contrib: Vec<(usize, f64)> = rw.feature_excess.iter().copied().enumerate().collect();
            contrib.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut f = Finding::new(AnomalyKind::Request, detector, key, (w.start, w.end));
            f.score = score_from_z(z);
            f.metric = "request.unusual_share";
            f.actual = Some(rate);
            f.expected = Some(p0);
            f.reason = format!(
                "{} of {} calls to {} {} looked unusual to the {model}, mostly for {} (usually {:.1}% do)",
                rw.unusual,
                rw.calls,
                node_label(w.names, (service, provider)),
                w.names.name(r),
                FEATURES[contrib[0].0].replace('_', " "),
                p0 * 100.0
            );
            f.contributors = contrib
                .iter()
                .take(3)
                .map(|(j, e)| Contributor {
                    name: FEATURES[*j].to_owned(),
                    share: super::round3(e / total),
                    actual: None,
                    expected: None,
                })
                .collect();
            f.impact_calls = rw.unusual;
            f.impact_users = rw.users.len() as u64;
            f.trace_ids = rw.traces;
            out.push(f.into_anomaly(w.names));
        }
    }
}

/// The training sample: for each hour of the day, a reservoir of that hour's calls from its most
/// recent day, so a fit sees the whole daily cycle once there is one (and recent behaviour).
#[derive(serde::Serialize, serde::Deserialize)]
struct HourlySample {
    buckets: Vec<Bucket>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Bucket {
    rows: Vec<[f64; NF]>,
    seen: u64,
    day: i64,
}

impl Default for HourlySample {
    fn default() -> Self {
        HourlySample {
            buckets: (0..24).map(|_| Bucket::default()).collect(),
        }
    }
}

impl HourlySample {
    fn add(&mut self, t: Millis, x: [f64; NF], rng: &mut ChaCha8Rng) {
        let b = &mut self.buckets[(t.rem_euclid(DAY_MS) / HOUR_MS) as usize];
        let day = t.div_euclid(DAY_MS);
        if b.day != day {
            // A new day for this hour: its calls replace the old day's, most of them quickly.
            b.day = day;
            b.seen = 0;
        }
        b.seen += 1;
        if b.rows.len() < PER_HOUR {
            b.rows.push(x);
        } else {
            let j = rng.gen_range(0..b.seen) as usize;
            if j < PER_HOUR {
                b.rows[j] = x;
            }
        }
    }
    fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.rows.len()).sum()
    }
    fn covers_the_day(&self) -> bool {
        self.buckets.iter().all(|b| b.rows.len() >= PER_HOUR / 8)
    }
    fn rows(&self) -> Vec<[f64; NF]> {
        self.buckets.iter().flat_map(|b| b.rows.iter().copied()).collect()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Fitted {
    forest: IsolationForest,
    threshold: f64,
    /// See [`IsolationForest::exceeds`]: 4 standard errors, so an early "ordinary" is wrong for
    /// well under one call in ten thousand near the threshold, and never far above it.
    early_margin: f64,
    mean: [f64; NF],
    std: [f64; NF],
    at: Millis,
    use_hour: bool,
}

/// The per-request isolation-forest detector.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct RequestForestDetector {
    params: ForestParams,
    featurizer: RequestFeaturizer,
    sample: HourlySample,
    first_call: Option<Millis>,
    rng: ChaCha8Rng,
    fitted: Option<Fitted>,
    tally: UnusualTally,
}

impl RequestForestDetector {
    pub fn new(seed: u64) -> Self {
        RequestForestDetector {
            // 32 trees: enough for a stable score of one call (the spread of the mean path length
            // shrinks as 1/sqrt(trees), and windows aggregate many calls), at a third of the
            // cost of 100 on the hot path.
            params: ForestParams {
                n_trees: 32,
                max_samples: 256,
                seed,
            },
            featurizer: RequestFeaturizer::default(),
            sample: HourlySample::default(),
            first_call: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
            fitted: None,
            tally: UnusualTally::default(),
        }
    }

    fn fit(&mut self, now: Millis) {
        let first = self.fitted.is_none();
        // The hour of day only means something once every hour has been sampled; until then it
        // is held constant (and so never split on) in training and scoring alike.
        let use_hour = self.sample.covers_the_day();
        let mut rows = self.sample.rows();
        if !use_hour {
            for r in &mut rows {
                r[HOUR] = 0.0;
            }
        }
        let n = rows.len();
        let data = Array2::from_shape_fn((n, NF), |(i, j)| rows[i][j]);
        let forest = IsolationForest::fit(data.view(), self.params);
        let scores = forest.score_rows(data.view());
        let threshold = quantile(&scores, 0.995);
        let early_margin = forest.early_margin(data.view(), 4.0);
        let (mean, std) = column_mean_std(&rows, 0.05);
        self.fitted = Some(Fitted {
            forest,
            threshold,
            early_margin,
            mean,
            std,
            at: now,
            use_hour,
        });
        for n in self.featurizer.norms.values_mut() {
            n.fitted = n.latency.n >= NEW_ROUTE_CALLS && (first || now - n.first_seen >= NEW_ROUTE_GRACE);
        }
    }
}

impl Detector for RequestForestDetector {
    fn name(&self) -> &'static str {
        "isolation_forest.request"
    }

    fn forget(&mut self, evicted: &Evicted) {
        self.featurizer.forget(evicted);
        self.tally.forget(evicted);
    }

    fn observe(&mut self, c: &CallContext<'_>) {
        let Some(mut x) = self.featurizer.features(c) else { return };
        self.first_call.get_or_insert(c.event.timestamp);
        self.sample.add(c.event.timestamp, x, &mut self.rng);
        let Some(f) = &self.fitted else { return };
        if !f.use_hour {
            x[HOUR] = 0.0;
        }
        if !self.featurizer.norms.get(&c.route_entity).is_some_and(|n| n.fitted) {
            return;
        }
        let (unusual, _) = f.forest.exceeds(&x, f.threshold, f.early_margin);
        let excess: [f64; NF] = std::array::from_fn(|j| ((x[j] - f.mean[j]) / f.std[j]).abs());
        let key = EntityKey::Route {
            service: c.service,
            provider: c.provider,
            route: c.route,
        };
        self.tally
            .record(c.route_entity, key, unusual, &excess, c.event.trace_id.as_deref(), c.user);
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        // Refit on schedule, or early once a route that appeared since the last fit has enough
        // calls to have a norm of its own.
        let newcomer_ready = self
            .featurizer
            .norms
            .values()
            .any(|n| !n.fitted && n.latency.n >= NEW_ROUTE_CALLS && w.end - n.first_seen >= NEW_ROUTE_GRACE);
        let enough = self.sample.len() >= MIN_TRAIN;
        let due = match &self.fitted {
            // The first fit waits for a few minutes of traffic, so route norms have settled.
            None => enough && self.first_call.is_some_and(|t| w.end - t >= FIRST_FIT_AFTER),
            Some(f) => (w.end - f.at >= REFIT_EVERY || newcomer_ready) && enough,
        };
        self.tally.close(w, "isolation_forest", "isolation forest", out);
        if due {
            self.fit(w.end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarity_falls_as_a_key_repeats_and_stays_bounded() {
        let mut f = Frequency::default();
        assert_eq!(f.rarity_and_count(Some(hash_str("10.0.0.1"))), 1.0);
        assert_eq!(f.rarity_and_count(Some(hash_str("10.0.0.1"))), 0.5);
        for _ in 0..1000 {
            f.rarity_and_count(Some(hash_str("10.0.0.1")));
        }
        assert!(f.rarity_and_count(Some(hash_str("10.0.0.1"))) < 0.01);
        assert_eq!(f.rarity_and_count(Some(hash_str("192.168.1.1"))), 1.0);
        assert_eq!(f.rarity_and_count(None), 0.0);
    }
}
