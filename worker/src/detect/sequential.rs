//! Evidence that accumulates: sequential tests (CUSUM) per service over the run of windows, for
//! what one window cannot show on a quiet service. A service with 3 calls a minute that goes
//! silent has one unremarkable empty minute after another; a 20% error burst on it is one or
//! two failures a minute. Each window adds its log-likelihood ratio to a running sum that forgets
//! nothing but good news (floored at zero); a sum past the threshold is an anomaly.
//!
//! - **Traffic drop**: calls are Poisson with the usual rate λ0 (a slow average of complete
//!   windows, frozen while the sum is building); the alternative is a ≥ 90% drop (λ1 = λ0/10).
//!   Calls come in sessions, so counts vary more than Poisson: the evidence is divided by each
//!   service's dispersion (variance over mean, learned over hours: it is how clients bunch their
//!   calls, steady while the rate follows the day), a quasi-likelihood. Windows are learned
//!   [`LEARN_LAG`] windows late, so the first minutes of a drop are judged before they are
//!   taken for usual.
//!   An empty window on a busy service crosses at once; on 2 calls a minute about seven empty
//!   minutes do. Silence is news: a service that usually has traffic and has none is judged
//!   every window (the aggregator reports idle entities for an hour).
//! - **Traffic loss propagates caller → callee**: a service's usual rate is first scaled by what
//!   its callers sent this window against their usual (over the hops that usually bring its
//!   calls; calls from outside count as steady). When the entry of a mesh loses half its
//!   clients, every service behind it is expected to lose half its calls: only the entry is
//!   judged to have dropped, and it is the origin. A caller that is as busy as usual but no
//!   longer calls a service leaves that service's expectation whole, and its drop is found.
//! - **Error rate**: failures (5xx) are binomial with the usual rate p0 (floored at 0.2%); the
//!   alternative is p1 = max(10%, 4·p0).
//! - **Slow calls** (services with fewer than [`SLOW_MAX_RATE`] calls a window, where one window
//!   holds too few calls for a quantile): each service learns the time only one call in ten
//!   usually takes (its p90, by a stochastic quantile step per window, on a log scale); calls past
//!   it are binomial with p0 = 10% against p1 = 50% (what doubling a log-normal latency with a
//!   typical spread does). Whatever the shape of the latency (two modes included) a tenth of
//!   the calls pass its own p90. A window adds at most a third of the threshold, so one slow
//!   minute never crosses alone. The same test runs on each quiet hop (one caller's calls to a
//!   callee), where a delay between two services shows that the callee's total dilutes.
//! - **A callee silent under its failing caller**: a service that is down logs nothing, and its
//!   callers fail at once. When a caller's error test crosses while a callee it usually calls
//!   has logged no call since before the caller's failures began (unlikely by chance on its
//!   usual traffic) and none from anyone this window, the failures are the callee's: a
//!   failing-hop finding on it (`SILENT_CALLEE_METRIC`), which the alert manager groups with the
//!   caller's failures and names as their cause.
//! - **Entry routes**: the traffic tests also run on each route of a service no service calls
//!   (a step of a flow its clients stop calling); routes of called services follow their
//!   callers, which are judged themselves.
//!
//! - **Pauses a service is known for**: some traffic stops for a minute or three and comes back
//!   by itself, again and again (a client that pauses between batches, a load generator). A drop
//!   that recovered within [`PAUSE_WINDOWS`] windows (before anyone could have acted on it),
//!   after evidence of at least half the threshold (a dip far past noise, crossed or not), is
//!   remembered for a day; a later drop is reported once a pause like those would rarely have
//!   lasted so long (chance under [`PAUSE_LEVEL`], from the remembered lengths and their number:
//!   [`pause_outlasts`]), and always once it outlasts [`PAUSE_WINDOWS`], the longest a pause can
//!   be. Until then it is still written, marked `held_by: learned_pause` with the pauses it is
//!   compared with, and counted, so nothing is dropped unseen. One longer than [`PAUSE_WINDOWS`]
//!   is never learned as a pause.
//!
//! A sum stays past its threshold for a few windows after the problem ends (it was capped, not
//! reset): a window of the traffic or slow-call test that itself adds no evidence (its own calls
//! look usual) is not reported, so what follows the end of a problem is not taken for more of
//! it; a relapse crosses at once. (The error test reports every window past its threshold: a
//! window without failures says little on a quiet service, and an error run shows in bursts.)
//!
//! The thresholds ([`THRESHOLD`], a likelihood ratio of e^12; [`ERROR_THRESHOLD`]) keep the false-alarm run length
//! above ~10^5 windows per service (Wald's bound e^h), so a sum of noise minutes does not
//! cross. The statistics know their sample size: an empty minute says more about a busy
//! service than a quiet one, and the test weighs it so. State is a few numbers per service,
//! checkpointed with the rest.

use rustc_hash::FxHashMap;

use super::stats::HourProfile;
use super::{entity_label, fmt_pct, Detector, Evicted, Finding, WindowContext};
use crate::model::anomaly::{Anomaly, AnomalyKind};
use crate::model::time::{Millis, DAY_MS};
use crate::model::{EntityKey, EntityKind, Sym, WindowStat};

/// The log-likelihood ratio a traffic-drop sum must reach to be an anomaly.
pub const THRESHOLD: f64 = 12.0;
/// The same for the error test. Lower, because its evidence comes only from failures: with the
/// usual rate at 0.5% and the alternative at 10%, a failure adds ln 20 ≈ 3 and a success takes
/// 0.1 away, so crossing 10 takes four failures in a handful of calls (or three in a row):
/// about 10^-6 per window under the usual rate.
pub const ERROR_THRESHOLD: f64 = 10.0;
/// Sums are capped at this multiple of their threshold, so recovery is seen within a few normal
/// windows even on a quiet service.
const CAP: f64 = 1.5;
/// Complete windows of history before a service is judged.
const MIN_WINDOWS: u32 = 30;
/// The share of calls the learned limit leaves above it, and the share the slow-call test looks for.
const SLOW_P0: f64 = 0.10;
const SLOW_P1: f64 = 0.50;
/// Services busier than this (usual calls a window) are left to the per-window latency tests.
pub const SLOW_MAX_RATE: f64 = 20.0;
/// The latency histogram the limit is read from: bins growing by a quarter from 0.1 ms (the
/// last one open), forgetting a call's weight over about [`SLOW_MEMORY`] windows.
const SLOW_BINS: usize = 72;
const SLOW_BIN_FIRST_MS: f64 = 0.1;
const SLOW_BIN_GROWTH: f64 = 1.25;
const SLOW_MEMORY: f64 = 600.0;

/// A slowdown that has lasted this many windows teaches the slow-call limit again, with a
/// memory this long: the new level becomes the usual one (see [`judge_slow`]).
const RELEARN_AFTER: u32 = 30;
/// Weight of the newest window in the usual levels (about a 30-window memory).
const ALPHA: f64 = 1.0 / 30.0;
/// Weight of the newest window in a service's dispersion (about a 4-hour memory). How far calls
/// bunch (the size of clients' sessions) is steady over the day while the rate is not, so it is
/// learned as a ratio and slowly: a variance learned as fast as the rate is thrown by one burst
/// and by the first minutes of a drop, and then takes the drop for noise.
const DISPERSION_ALPHA: f64 = 1.0 / 240.0;
/// A window's calls are learned as usual this many windows late: a drop that is then being
/// proven (half the threshold) began inside the delay, and its windows are held until it is
/// (then forgotten) or is not (then learned), so a drop does not lower its own expectation
/// before its evidence is in.
const LEARN_LAG: usize = 10;
/// At most this many windows are held while a drop is being proven and not yet proven.
const HOLD_AT_MOST: usize = 60;
/// Below this usual rate (calls per window) a drop says too little to judge.
const MIN_RATE: f64 = 0.5;
/// The drop the traffic test looks for: to a tenth of the usual rate.
const DROP_TO: f64 = 0.1;
/// A second test looks for a milder drop, to a third, which the first one weighs too little
/// (two thirds of the calls gone add about a quarter of the evidence per window that the test
/// for a tenth would need): sessions lost at a balancer or a client, not a service down.
const DROP_TO_MILD: f64 = 1.0 / 3.0;
/// What the mild test needs above [`THRESHOLD`]: two tests on one count, so each at half the
/// false-alarm rate (Bonferroni: ln 2).
const MILD_EXTRA: f64 = std::f64::consts::LN_2;
/// The mild test runs only where a drop to a third would cross its threshold within this many
/// windows ([`gained_if_dropped`], divided by the dispersion): on quieter traffic it could not
/// find one while it matters, and a sum that lingers half way up after a real drop would make a
/// few quiet minutes look like a new one.
const MILD_HORIZON: f64 = 10.0;

/// The evidence a window adds, per usual call, to the test for a drop to `to` when traffic did
/// drop that far (the Kullback-Leibler divergence of the drop from the usual).
fn gained_if_dropped(to: f64) -> f64 {
    1.0 - to + to * to.ln()
}

/// The evidence a window takes away, per usual call, from the test for a drop to `to` when
/// traffic is as usual.
fn lost_if_usual(to: f64) -> f64 {
    -to.ln() - (1.0 - to)
}

/// The mild test's cap: as many windows of usual traffic back below its threshold as the deep
/// test's cap needs. A usual window takes less from it than from the deep one, so the deep
/// test's cap would keep a mild finding going long after traffic came back.
fn mild_cap() -> f64 {
    THRESHOLD + MILD_EXTRA + (CAP - 1.0) * THRESHOLD * lost_if_usual(DROP_TO_MILD) / lost_if_usual(DROP_TO)
}
/// A drop reported for at most this many windows that recovered by itself is a pause the service
/// is known for (about the time an alert takes to resolve: shorter, nobody could have acted).
pub const PAUSE_WINDOWS: u32 = 5;
/// Pauses are remembered this long.
const PAUSE_MEMORY: Millis = DAY_MS;
/// At most this many pauses are remembered per service (the longest are kept).
const PAUSES_KEPT: usize = 8;
/// A drop is held back while a remembered pause would last as long with at least this chance.
pub(crate) const PAUSE_LEVEL: f64 = 0.05;
/// What marks a drop held back because the service is known for pauses this long.
pub const LEARNED_PAUSE: &str = "learned_pause";

/// What a service's remembered pauses say about the drop in progress.
#[derive(Debug, Clone, Copy)]
struct KnownPauses {
    count: usize,
    longest: u32,
    /// The chance that a pause like those lasts at least as long as this drop has.
    chance: f64,
}

/// The chance that a pause of the kind remembered lasts at least `windows` windows, from the
/// remembered lengths: pause lengths taken as exponential with an unknown mean (Jeffreys' prior),
/// whose predictive tail is `(S / (S + w))^n` for `n` pauses of total length `S`. It knows its
/// sample size: one 2-window pause makes a 5-window one quite possible (0.29); eight 1-window
/// pauses make a 4-window one unlikely (0.04).
pub(crate) fn pause_outlasts(lengths: &[u32], windows: u32) -> f64 {
    let total: f64 = lengths.iter().map(|&n| f64::from(n)).sum();
    if lengths.is_empty() || total <= 0.0 {
        return 0.0;
    }
    (total / (total + f64::from(windows))).powi(lengths.len() as i32)
}

#[derive(serde::Serialize, serde::Deserialize, Default, Clone, Debug)]
struct ServiceState {
    windows: u32,
    /// Usual calls per window.
    rate: f64,
    /// Usual squared deviation of calls from `rate`: traffic in sessions comes in bursts, so
    /// the variance is often several times the mean, and an empty minute is that much likelier.
    variance: f64,
    /// Usual variance over mean of calls a window, learned slowly ([`DISPERSION_ALPHA`]) once the
    /// service is judged; 0 before (then `variance / rate`).
    #[serde(default)]
    dispersion: f64,
    /// Calls of the last windows, not yet learned ([`LEARN_LAG`]).
    #[serde(default)]
    unlearned: std::collections::VecDeque<u64>,
    /// Whether another service has been seen calling this one (then it is no entry).
    #[serde(default)]
    called: bool,
    /// Usual 5xx share, as decayed sums of failures and calls.
    failures: f64,
    calls: f64,
    drop_sum: f64,
    /// The sum of the test for a mild drop ([`DROP_TO_MILD`]).
    #[serde(default)]
    drop_mild_sum: f64,
    error_sum: f64,
    /// Windows the current drop or error run has lasted (for the reason text).
    drop_run: u32,
    error_run: u32,
    /// Calls and failures since the error run began.
    run_calls: u64,
    run_failures: u64,
    /// Windows of the current drop run with calls far below usual (each one adding evidence),
    /// from the first of them.
    #[serde(default)]
    drop_low: u32,
    /// Whether the current drop run has built half the threshold's evidence (a dip worth
    /// remembering as a pause when it recovers by itself).
    #[serde(default, alias = "drop_crossed")]
    drop_clear: bool,
    /// Recent calls' latencies, decayed, by bin (empty until the first timed call), each
    /// divided by its hour's usual ([`ServiceState::slow_hours`]).
    #[serde(default)]
    slow_bins: Vec<f32>,
    /// The usual log latency by hour of day: what the slow-call limit is scaled by.
    #[serde(default)]
    slow_hours: HourProfile,
    #[serde(default)]
    slow_sum: f64,
    #[serde(default)]
    slow_run: u32,
    /// Calls past the limit and timed calls since the slow run began.
    #[serde(default)]
    run_slow: u64,
    #[serde(default)]
    run_timed: u64,
    /// Complete windows in a row, up to the last, with at least one 5xx.
    #[serde(default)]
    failing_windows: u32,
    /// Recent drops that recovered by themselves: (end of the last window, windows far below
    /// usual).
    #[serde(default)]
    pauses: Vec<(Millis, u32)>,
}

impl ServiceState {
    /// How far the drop tests are towards [`THRESHOLD`]: the larger of the two, the mild one
    /// less what it needs more.
    fn drop_level(&self) -> f64 {
        self.drop_sum.max(self.drop_mild_sum - MILD_EXTRA)
    }

    /// Whether the mild test is the one that leads (the size of drop the evidence is for).
    fn mild_leads(&self) -> bool {
        self.drop_mild_sum - MILD_EXTRA > self.drop_sum
    }

    /// The pauses remembered at `now`: how many, the longest, and the chance that one of them
    /// lasts at least `windows` windows (see [`pause_outlasts`]).
    fn known_pause(&mut self, now: Millis, windows: u32) -> Option<KnownPauses> {
        self.pauses.retain(|&(end, _)| now - end <= PAUSE_MEMORY);
        let longest = self.pauses.iter().map(|&(_, n)| n).max()?;
        let lengths: Vec<u32> = self.pauses.iter().map(|&(_, n)| n).collect();
        Some(KnownPauses {
            count: lengths.len(),
            longest,
            chance: pause_outlasts(&lengths, windows),
        })
    }

    /// Ends a drop run at `now`, remembering it when it was a short pause.
    fn end_drop_run(&mut self, now: Millis) {
        if self.drop_clear && (1..=PAUSE_WINDOWS).contains(&self.drop_low) {
            self.pauses.push((now, self.drop_low));
            if self.pauses.len() > PAUSES_KEPT {
                // Forget the shortest (and, among equals, the oldest).
                let shortest = self.pauses.iter().enumerate().min_by_key(|(_, &(end, n))| (n, end));
                if let Some((i, _)) = shortest {
                    self.pauses.remove(i);
                }
            }
        }
        self.drop_clear = false;
        self.drop_low = 0;
    }

    /// The time a tenth of calls usually pass (ms) at `t`, from the latency histogram and the
    /// hour's usual; `None` before the first timed call or on a busy service.
    fn slow_limit(&self, t: Millis) -> Option<f64> {
        self.relative_slow_limit().map(|limit| limit * self.slow_hours.factor(t))
    }

    /// The same in multiples of the hour's usual (what the histogram holds).
    fn relative_slow_limit(&self) -> Option<f64> {
        slow_quantile(&self.slow_bins, 1.0 - SLOW_P0)
    }

    /// How much more calls vary than Poisson (at least 1).
    fn dispersion(&self) -> f64 {
        if self.dispersion > 0.0 {
            self.dispersion
        } else {
            self.variance / self.rate.max(f64::MIN_POSITIVE)
        }
        .max(1.0)
    }

    /// Learns a window's calls as usual traffic: a plain mean while young.
    fn learn_calls(&mut self, calls: u64, judged: bool) {
        let a = ALPHA.max(1.0 / f64::from(self.windows + 1));
        let deviation = calls as f64 - self.rate;
        if judged {
            let seen = deviation * deviation / self.rate.max(MIN_RATE);
            let start = self.dispersion();
            self.dispersion = start + DISPERSION_ALPHA * (seen - start);
        }
        self.rate += a * deviation;
        self.variance += a * (deviation * deviation - self.variance);
    }

    fn usual_error_rate(&self) -> f64 {
        // A prior of 0.5% over 100 calls keeps a young service's rate from being 0.
        ((self.failures + 0.5) / (self.calls + 100.0)).max(0.002)
    }
}

/// The sequential-test detector.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct SequentialDetector {
    services: FxHashMap<u32, ServiceState>,
    /// Usual calls a window over each hop (caller → callee), by hop entity: how much of a
    /// callee's traffic each caller usually brings.
    #[serde(default)]
    hops: FxHashMap<u32, HopState>,
}

/// What one hop usually carries.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone, Copy, Debug)]
struct HopState {
    windows: u32,
    rate: f64,
    /// Complete windows in a row without a call on the hop, once it is learned.
    #[serde(default)]
    silent: u32,
    /// The calls it usually carries over those windows.
    #[serde(default)]
    missed: f64,
}

/// The log-likelihood ratio of `k` calls under a drop to `to`·λ0 against λ0.
fn drop_llr(k: u64, lambda0: f64, to: f64) -> f64 {
    k as f64 * to.ln() + (1.0 - to) * lambda0
}

/// The log-likelihood ratio of `k` successes in `n` trials under rate p1 against p0 (failures
/// among calls, slow calls, long waits).
pub(crate) fn binomial_llr(k: u64, n: u64, p0: f64, p1: f64) -> f64 {
    k as f64 * (p1 / p0).ln() + (n - k) as f64 * ((1.0 - p1) / (1.0 - p0)).ln()
}

/// A score for a sum past its threshold: just past it is as strong as one clear finding (70),
/// at the cap (1.5 thresholds) 95. Shared by every sequential test.
pub(crate) fn score_of(sum: f64, threshold: f64) -> f64 {
    70.0 + 25.0 * ((sum - threshold) / ((CAP - 1.0) * threshold)).clamp(0.0, 1.0)
}

/// The bin of a latency in the histogram the slow-call limit is read from.
fn slow_bin(ms: f64) -> usize {
    let i = (ms.max(SLOW_BIN_FIRST_MS) / SLOW_BIN_FIRST_MS).ln() / SLOW_BIN_GROWTH.ln();
    (i as usize).min(SLOW_BINS - 1)
}

/// The latency that a share `1 - q` of the histogram's weight passes (geometric within a bin).
fn slow_quantile(bins: &[f32], q: f64) -> Option<f64> {
    let total: f64 = bins.iter().map(|&b| f64::from(b)).sum();
    if total <= 0.0 {
        return None;
    }
    let mut below = 0.0;
    for (i, &b) in bins.iter().enumerate() {
        let b = f64::from(b);
        if b > 0.0 && below + b >= q * total {
            let within = ((q * total - below) / b).clamp(0.0, 1.0);
            return Some(SLOW_BIN_FIRST_MS * SLOW_BIN_GROWTH.powf(i as f64 + within));
        }
        below += b;
    }
    None
}

/// The slow-call test of one window (see the module's notes); the sum when it crossed.
fn judge_slow(s: &mut ServiceState, st: &WindowStat, judged: bool) -> Option<f64> {
    let timed = st.latencies.len();
    let mut crossed = None;
    let judging = judged && timed > 0 && s.rate < SLOW_MAX_RATE;
    // The hour's usual against the day's: the limit is judged and learned in its multiples.
    let hour = s.slow_hours.factor(st.start);
    if let Some(limit) = s.relative_slow_limit().map(|limit| limit * hour).filter(|_| judging) {
        let slow = st.latencies.above(limit);
        let llr = binomial_llr(slow, timed, SLOW_P0, SLOW_P1);
        s.slow_sum = (s.slow_sum + llr.min(THRESHOLD / 3.0)).clamp(0.0, CAP * THRESHOLD);
        if s.slow_sum > 0.0 {
            if s.slow_run == 0 {
                (s.run_slow, s.run_timed) = (0, 0);
            }
            s.slow_run += 1;
            s.run_slow += slow;
            s.run_timed += timed;
        } else {
            s.slow_run = 0;
        }
        if s.slow_sum >= THRESHOLD && llr > 0.0 {
            crossed = Some(s.slow_sum);
        }
    }
    // The limit learns while no slowdown is being proven (so a slowdown does not teach itself),
    // and again, faster, once one has lasted [`RELEARN_AFTER`] windows: a latency that stays
    // shifted that long is how the service now behaves, reported for half an hour already.
    // Only quiet services are judged; busy ones keep nothing.
    let relearning = s.slow_run > RELEARN_AFTER;
    if (s.slow_sum < THRESHOLD / 2.0 || !judged || relearning) && timed > 0 && s.rate < SLOW_MAX_RATE {
        if s.slow_bins.len() != SLOW_BINS {
            s.slow_bins = vec![0.0; SLOW_BINS];
        }
        let memory = if relearning { f64::from(RELEARN_AFTER) } else { SLOW_MEMORY };
        let keep = (1.0 - 1.0 / memory) as f32;
        s.slow_bins.iter_mut().for_each(|b| *b *= keep);
        // The hour learns its usual from the same windows (none while a slowdown is being proven).
        let mut logs = 0.0;
        for v in st.latencies.values() {
            s.slow_bins[slow_bin(v / hour)] += 1.0;
            logs += v.max(SLOW_BIN_FIRST_MS).ln();
        }
        s.slow_hours.learn(st.start, logs / timed as f64);
    } else if s.rate >= SLOW_MAX_RATE && !s.slow_bins.is_empty() {
        s.slow_bins = Vec::new();
        s.slow_hours = HourProfile::default();
        s.slow_sum = 0.0;
    }
    crossed
}

/// The traffic tests of one complete window (see the module's notes), with the usual rate's
/// learning: the sum when a drop is proven and this window adds to it.
fn judge_traffic(s: &mut ServiceState, st: &WindowStat, judged: bool, load: f64) -> Option<f64> {
    let mut drop = None;
    if judged && s.rate >= MIN_RATE {
        // Quasi-likelihood: the Poisson evidence divided by the dispersion (variance/mean),
        // against the usual rate scaled by what the callers sent.
        let dispersion = s.dispersion();
        let expected = s.rate * load;
        let deep = drop_llr(st.count, expected, DROP_TO) / dispersion;
        let mild_can_cross = gained_if_dropped(DROP_TO_MILD) * expected / dispersion * MILD_HORIZON >= THRESHOLD + MILD_EXTRA;
        let mild = drop_llr(st.count, expected, DROP_TO_MILD) / dispersion;
        s.drop_sum = (s.drop_sum + deep).clamp(0.0, CAP * THRESHOLD);
        s.drop_mild_sum = if mild_can_cross {
            (s.drop_mild_sum + mild).clamp(0.0, mild_cap())
        } else {
            0.0
        };
        let llr = if s.mild_leads() { mild } else { deep };
        let level = s.drop_level();
        if level > 0.0 {
            s.drop_run += 1;
            if llr > 0.0 {
                s.drop_low += 1;
            } else if !s.drop_clear {
                // Before the dip is clear, its length is the run of low windows up to now.
                s.drop_low = 0;
            }
        } else {
            s.drop_run = 0;
        }
        if level >= THRESHOLD / 2.0 {
            s.drop_clear = true;
        }
        // A run ends when its evidence falls back under half the threshold once it had passed
        // it, or to nothing; while it is still building, its low windows count from the first
        // (a quiet service takes several silent windows to reach half the threshold, and they
        // are part of how long the drop has lasted).
        if level >= THRESHOLD {
            drop = Some(level).filter(|_| llr > 0.0);
        } else if level < THRESHOLD / 2.0 && (s.drop_clear || level <= 0.0) {
            s.end_drop_run(st.end);
        }
    }
    // The usual rate learns every window but those of a proven drop (so an outage does not
    // teach itself), [`LEARN_LAG`] windows late, and holds them while a drop is being proven
    // (half the threshold): proven, they are forgotten; not, they were usual after all.
    if !judged {
        s.learn_calls(st.count, false);
    } else {
        s.unlearned.push_back(st.count);
        let level = s.drop_level();
        if level >= THRESHOLD {
            s.unlearned.clear();
        }
        let lag = if level >= THRESHOLD / 2.0 { HOLD_AT_MOST } else { LEARN_LAG };
        while s.unlearned.len() > lag {
            let calls = s.unlearned.pop_front().unwrap_or_default();
            s.learn_calls(calls, true);
        }
    }
    drop
}

/// The anomaly of a proven drop of `st`'s calls (a service or an entry route), held back and
/// saying so when the entity is known for pauses as long.
fn drop_anomaly(s: &mut ServiceState, st: &WindowStat, w: &WindowContext<'_>, sum: f64, load: f64) -> Anomaly {
    let pause = s.known_pause(w.end, s.drop_low);
    let label = entity_label(w.names, &st.key);
    let mut f = Finding::new(AnomalyKind::Traffic, "sequential", st.key, (w.start, w.end));
    f.score = score_of(sum, THRESHOLD);
    f.metric = "calls.sequential";
    f.actual = Some(st.count as f64);
    f.expected = Some(s.rate * load);
    f.reason = format!(
        "{label} received {} calls this window against about {:.1} usually{}; traffic has been far below usual for {} windows \
         (sequential test: evidence e^{sum:.0} for a drop of {:.0}% or more)",
        st.count,
        s.rate * load,
        if load < 0.995 {
            format!(" (its callers sent {} of their usual calls)", fmt_pct(load))
        } else {
            String::new()
        },
        s.drop_low,
        100.0 * (1.0 - if s.mild_leads() { DROP_TO_MILD } else { DROP_TO })
    );
    let held = pause.filter(|p| s.drop_low <= PAUSE_WINDOWS && p.chance >= PAUSE_LEVEL);
    if let Some(p) = held {
        f.reason.push_str(&format!(
            "; held back: {} drop(s) in the last day lasted up to {} window(s) and recovered by themselves, \
             and one like them lasts {} window(s) or more with chance {:.2}; reported once that chance is \
             under {PAUSE_LEVEL} or the drop outlasts {PAUSE_WINDOWS} windows",
            p.count, p.longest, s.drop_low, p.chance
        ));
    }
    f.sole_contributor(st.count as f64, s.rate * load);
    f.run_of(s.drop_run);
    f.impact_of(st);
    f.impact_calls = (s.rate * load - st.count as f64).max(0.0).round() as u64;
    let mut a = f.into_anomaly(w.names);
    if held.is_some() {
        a.held_by = Some(LEARNED_PAUSE.to_owned());
    }
    a
}

/// The anomaly of a proven run of slow calls on `st` (a service, or a hop: its callee's time
/// on the calls of one caller).
fn slow_anomaly(s: &ServiceState, st: &WindowStat, w: &WindowContext<'_>, sum: f64) -> Anomaly {
    let label = entity_label(w.names, &st.key);
    let share = s.run_slow as f64 / s.run_timed.max(1) as f64;
    let mut f = Finding::new(AnomalyKind::Latency, "sequential", st.key, (w.start, w.end));
    f.score = score_of(sum, THRESHOLD);
    f.metric = "latency.slow_share.sequential";
    f.actual = Some(share);
    f.expected = Some(SLOW_P0);
    // Said where the hour's usual is not the day's (beyond what noise would move it).
    let at_hour = if s.slow_hours.factor(st.start).ln().abs() > 0.05 {
        " at this hour"
    } else {
        ""
    };
    f.reason = format!(
        "{} of {} calls to {label} over the last {} windows took longer than {:.0} ms ({}), which only 1 call \
         in 10 usually does{at_hour} (sequential test: evidence e^{sum:.0})",
        s.run_slow,
        s.run_timed,
        s.slow_run,
        s.slow_limit(st.start).unwrap_or(0.0),
        fmt_pct(share)
    );
    f.sole_contributor(share, SLOW_P0);
    f.run_of(s.slow_run);
    f.impact_of(st);
    f.impact_calls = s.run_slow;
    f.into_anomaly(w.names)
}

/// The window's service stats by `(service, provider)`.
fn service_stats<'w>(w: &WindowContext<'w>) -> FxHashMap<(Sym, Sym), &'w WindowStat> {
    w.stats
        .iter()
        .filter(|st| st.key.kind() == EntityKind::Service)
        .map(|st| (st.key.owner(), st))
        .collect()
}

/// A proven run of failures on a service, for [`SequentialDetector::judge_silent_callees`].
#[derive(Debug, Clone, Copy)]
struct ErrorRun {
    sum: f64,
    failures: u64,
    windows: u32,
    /// Windows in a row, up to this one, with a failure.
    failing: u32,
}

/// How unlikely a callee's silence on a failing caller's hop must be under its usual traffic
/// (a chance of e^-3, 5%) before the caller's failures are laid at its door. The caller's
/// failures are proven by their own test; this only asks whether the silence is more than chance.
const SILENT_CALLEE_EVIDENCE: f64 = 3.0;
/// What marks such a finding.
pub const SILENT_CALLEE_METRIC: &str = "journey.silent_callee.sequential";

impl SequentialDetector {
    /// A service that is down logs nothing, and its callers fail at once: their failures are
    /// proven, its silence may not be (on a quiet service a silent minute says little, and an
    /// outage can end before its own traffic test crosses), and an alert would name the caller.
    /// When a caller's error test crosses while a callee it usually calls has logged no call
    /// at all — on that hop since the caller's current run of failing windows began, for as
    /// many windows as make its usual calls there unlikely to be missing by chance
    /// (dispersion-weighted, [`SILENT_CALLEE_EVIDENCE`]), and from anyone this window — the
    /// failures are the callee's: a failing-hop finding on it, as strong as the
    /// caller's errors. A caller failing by itself still calls its callees (its successful
    /// calls do), and a caller that stopped calling one callee leaves it its other callers.
    fn judge_silent_callees(&self, w: &WindowContext<'_>, failing: &FxHashMap<(Sym, Sym), ErrorRun>, out: &mut Vec<Anomaly>) {
        if failing.is_empty() || !w.complete {
            return;
        }
        let services = service_stats(w);
        for hop in w.stats.iter() {
            let EntityKey::Hop { from, to } = hop.key else { continue };
            let (Some(run), Some(h)) = (failing.get(&from), self.hops.get(&hop.entity)) else {
                continue;
            };
            let Some(callee) = services.get(&to) else { continue };
            // The caller fails this window, and the callee has been silent since before its
            // failures began (one that falls silent in the middle of its caller's own failures
            // is a coincidence, not their cause).
            if run.failing == 0 || h.silent < run.failing || hop.count > 0 || callee.count > 0 {
                continue;
            }
            let dispersion = self.services.get(&callee.entity).map_or(1.0, ServiceState::dispersion);
            let evidence = h.missed / dispersion;
            if evidence < SILENT_CALLEE_EVIDENCE {
                continue;
            }
            let caller = crate::detect::node_label(w.names, from);
            let label = crate::detect::node_label(w.names, to);
            let mut f = Finding::new(AnomalyKind::Journey, "sequential", hop.key, (w.start, w.end));
            f.score = score_of(run.sum, ERROR_THRESHOLD);
            f.metric = SILENT_CALLEE_METRIC;
            f.actual = Some(0.0);
            f.expected = Some(h.missed);
            f.reason = format!(
                "{caller} has been failing ({} failures over {} windows, proven by its error test) while {label} \
                 logged no call: none from {caller} for {} windows, where about {:.1} usually come (a silence that \
                 long has a chance of e^-{evidence:.1} on its usual traffic), and none from anyone this window; {label} is likely down or \
                 unreachable, and the failures its callers see are its",
                run.failures, run.windows, h.silent, h.missed
            );
            f.sole_contributor(0.0, h.missed);
            f.run_of(h.silent);
            f.impact_calls = run.failures;
            out.push(f.into_anomaly(w.names));
        }
    }

    /// The share of its usual traffic each service's callers sent it this window (see the
    /// module's notes), by service; services without known callers are left out (1). Learns
    /// the hops' usual rates from a complete window.
    fn caller_loads(&mut self, w: &WindowContext<'_>) -> FxHashMap<(Sym, Sym), f64> {
        let services = service_stats(w);
        // Per callee: (usual calls its callers bring, usual calls they did not send this window).
        let mut brought: FxHashMap<(Sym, Sym), (f64, f64)> = FxHashMap::default();
        for hop in w.stats.iter() {
            let EntityKey::Hop { from, to } = hop.key else { continue };
            let usual = self.hops.get(&hop.entity).copied().unwrap_or_default();
            let caller = services.get(&from).and_then(|c| Some((c.count, self.services.get(&c.entity)?)));
            if let Some((calls, cs)) = caller.filter(|(_, cs)| cs.windows >= MIN_WINDOWS && cs.rate >= MIN_RATE) {
                if usual.windows >= MIN_WINDOWS {
                    let sent = (calls as f64 / cs.rate).min(1.0);
                    let e = brought.entry(to).or_default();
                    e.0 += usual.rate;
                    e.1 += usual.rate * (1.0 - sent);
                }
            }
            if w.complete {
                let h = self.hops.entry(hop.entity).or_default();
                if hop.count == 0 && h.windows >= MIN_WINDOWS {
                    h.silent += 1;
                    h.missed += h.rate;
                } else {
                    (h.silent, h.missed) = (0, 0.0);
                }
            }
            if hop.count > 0 {
                if let Some(callee) = services.get(&to) {
                    self.services.entry(callee.entity).or_default().called = true;
                }
            }
            // The hop learns while neither end's drop is being proven: what it carries while its
            // caller has lost its clients is not what it usually brings.
            let proving = |node| {
                services
                    .get(&node)
                    .and_then(|c| self.services.get(&c.entity))
                    .is_some_and(|s| s.drop_level() >= THRESHOLD / 2.0)
            };
            if w.complete && !proving(to) && !proving(from) {
                let h = self.hops.entry(hop.entity).or_default();
                let a = ALPHA.max(1.0 / f64::from(h.windows + 1));
                h.rate += a * (hop.count as f64 - h.rate);
                h.windows = h.windows.saturating_add(1);
            }
        }
        brought
            .into_iter()
            .filter_map(|(to, (usual, missing))| {
                let rate = self.services.get(&services.get(&to)?.entity)?.rate;
                Some((to, (1.0 - missing / rate.max(usual).max(f64::MIN_POSITIVE)).clamp(0.0, 1.0)))
            })
            .collect()
    }

    /// The traffic test on each route of an entry service (one no service is seen to call): a
    /// flow whose clients stop calling one of its steps, or one kind of client gone, is a drop
    /// of a route the service's total hides. Routes of called services follow their callers,
    /// which are judged themselves. A route is not reported while its whole service's drop is
    /// (that finding says it).
    fn judge_entry_routes(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        if !w.complete {
            return;
        }
        let entries: FxHashMap<(Sym, Sym), bool> = w
            .stats
            .iter()
            .filter(|st| st.key.kind() == EntityKind::Service)
            .filter_map(|st| {
                let s = self.services.get(&st.entity)?;
                Some((st.key.owner(), s.called || s.drop_level() >= THRESHOLD))
            })
            .filter(|&(_, skip)| !skip)
            .collect();
        for st in w.stats.iter().filter(|st| st.key.kind() == EntityKind::Route) {
            if !entries.contains_key(&st.key.owner()) {
                continue;
            }
            let s = self.services.entry(st.entity).or_default();
            let judged = s.windows >= MIN_WINDOWS;
            let drop = judge_traffic(s, st, judged, 1.0);
            s.windows = s.windows.saturating_add(1);
            if let Some(sum) = drop {
                out.push(drop_anomaly(s, st, w, sum, 1.0));
            }
        }
    }

    /// The slow-call test on each hop (a caller's calls to a callee): a callee slow for one
    /// caller only (the network between them, a route only that caller uses) is a small share
    /// of its calls, which its own test does not see. Quiet hops only, as for services.
    fn judge_slow_hops(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        if !w.complete {
            return;
        }
        for st in w.stats.iter().filter(|st| st.key.kind() == EntityKind::Hop) {
            let s = self.services.entry(st.entity).or_default();
            let judged = s.windows >= MIN_WINDOWS;
            let slow = judge_slow(s, st, judged);
            s.learn_calls(st.count, false);
            s.windows = s.windows.saturating_add(1);
            if let Some(sum) = slow {
                out.push(slow_anomaly(s, st, w, sum));
            }
        }
    }

    fn judge(&mut self, st: &WindowStat, complete: bool, load: f64) -> (Option<f64>, Option<f64>, Option<f64>) {
        let s = self.services.entry(st.entity).or_default();
        if !complete {
            return (None, None, None);
        }
        let judged = s.windows >= MIN_WINDOWS;
        let drop = judge_traffic(s, st, judged, load);
        s.failing_windows = if st.errors_5xx > 0 { s.failing_windows + 1 } else { 0 };
        // Errors.
        let mut errors = None;
        let p0 = s.usual_error_rate();
        let p1 = (4.0 * p0).max(0.10);
        if judged && st.count > 0 && p1 < 0.9 {
            s.error_sum = (s.error_sum + binomial_llr(st.errors_5xx, st.count, p0, p1)).clamp(0.0, CAP * ERROR_THRESHOLD);
            if s.error_sum > 0.0 {
                if s.error_run == 0 {
                    (s.run_calls, s.run_failures) = (0, 0);
                }
                s.error_run += 1;
                s.run_calls += st.count;
                s.run_failures += st.errors_5xx;
            } else {
                s.error_run = 0;
            }
            if s.error_sum >= ERROR_THRESHOLD {
                errors = Some(s.error_sum);
            }
        }
        if s.error_sum < ERROR_THRESHOLD / 2.0 || !judged {
            let keep = 1.0 - ALPHA;
            s.failures = s.failures * keep + st.errors_5xx as f64;
            s.calls = s.calls * keep + st.count as f64;
        }
        let slow = judge_slow(s, st, judged);
        s.windows = s.windows.saturating_add(1);
        (drop, errors, slow)
    }
}

impl Detector for SequentialDetector {
    fn name(&self) -> &'static str {
        "sequential"
    }

    fn forget(&mut self, evicted: &Evicted) {
        self.services.retain(|id, _| !evicted.id(*id));
        self.hops.retain(|id, _| !evicted.id(*id));
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        let loads = self.caller_loads(w);
        // Services whose error test crossed this window: (sum, failures, calls, windows).
        let mut failing: FxHashMap<(Sym, Sym), ErrorRun> = FxHashMap::default();
        for st in w.stats.iter().filter(|st| st.key.kind() == EntityKind::Service) {
            let load = loads.get(&st.key.owner()).copied().unwrap_or(1.0);
            let (drop, errors, slow) = self.judge(st, w.complete, load);
            let Some(s) = self.services.get_mut(&st.entity) else { continue };
            if let Some(sum) = drop {
                out.push(drop_anomaly(s, st, w, sum, load));
            }
            let s = &*s;
            let label = entity_label(w.names, &st.key);
            if let Some(sum) = slow {
                out.push(slow_anomaly(s, st, w, sum));
            }
            if let Some(sum) = errors {
                failing.insert(
                    st.key.owner(),
                    ErrorRun {
                        sum,
                        failures: s.run_failures,
                        windows: s.error_run,
                        failing: s.failing_windows,
                    },
                );
                let p0 = s.usual_error_rate();
                let rate = s.run_failures as f64 / s.run_calls.max(1) as f64;
                let mut f = Finding::new(AnomalyKind::Errors, "sequential", st.key, (w.start, w.end));
                f.score = score_of(sum, ERROR_THRESHOLD);
                f.metric = "errors.5xx_rate.sequential";
                f.actual = Some(rate);
                f.expected = Some(p0);
                f.reason = format!(
                    "{} of {} calls to {label} failed with 5xx over the last {} windows ({}), expected about {} \
                     (sequential test: evidence e^{sum:.0})",
                    s.run_failures,
                    s.run_calls,
                    s.error_run,
                    fmt_pct(rate),
                    fmt_pct(p0)
                );
                f.sole_contributor(rate, p0);
                f.run_of(s.error_run);
                f.impact_of(st);
                f.impact_calls = s.run_failures;
                out.push(f.into_anomaly(w.names));
            }
        }
        self.judge_silent_callees(w, &failing, out);
        self.judge_entry_routes(w, out);
        self.judge_slow_hops(w, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testing::service_window;
    use crate::model::time::MINUTE_MS;
    use crate::model::Interner;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Poisson};

    /// Runs per-window (calls, 5xx) through a detector: every finding with its window.
    fn findings(windows: &[(u64, u64)]) -> Vec<(usize, Anomaly)> {
        let mut d = SequentialDetector::default();
        let mut names = Interner::default();
        let mut found = Vec::new();
        for (i, &(n, e)) in windows.iter().enumerate() {
            let t = i as i64 * MINUTE_MS;
            let st = service_window(&mut names, t, n, e, 100.0);
            let w = WindowContext {
                start: t,
                end: t + MINUTE_MS,
                stats: std::slice::from_ref(&st),
                names: &names,
                complete: true,
            };
            let mut out = Vec::new();
            d.close_window(&w, &mut out);
            found.extend(out.into_iter().map(|a| (i, a)));
        }
        found
    }

    /// The windows with a finding of `kind`.
    fn run(windows: &[(u64, u64)], kind: AnomalyKind) -> Vec<usize> {
        let mut found: Vec<usize> = findings(windows)
            .into_iter()
            .filter(|(_, a)| a.kind == kind)
            .map(|(i, _)| i)
            .collect();
        found.dedup();
        found
    }

    fn poisson(rate: f64, n: usize, seed: u64) -> Vec<u64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let p = Poisson::new(rate).unwrap();
        (0..n).map(|_| p.sample(&mut rng) as u64).collect()
    }

    #[test]
    fn silence_on_a_quiet_service_is_found_within_minutes_and_noise_is_not() {
        for (rate, within) in [(2.0, 12), (5.0, 6), (20.0, 3)] {
            for seed in 0..20 {
                let mut calls = poisson(rate, 600, seed);
                // Noise alone: no finding in 10 hours.
                let windows: Vec<(u64, u64)> = calls.iter().map(|&n| (n, 0)).collect();
                assert!(
                    run(&windows, AnomalyKind::Traffic).is_empty(),
                    "rate {rate} seed {seed}: noise flagged"
                );
                // Silence from window 400 to 430.
                calls[400..430].iter_mut().for_each(|c| *c = 0);
                let windows: Vec<(u64, u64)> = calls.iter().map(|&n| (n, 0)).collect();
                let found = run(&windows, AnomalyKind::Traffic);
                let first = *found.first().unwrap_or_else(|| panic!("rate {rate} seed {seed}: silence missed"));
                assert!((400..400 + within).contains(&first), "rate {rate} seed {seed}: found at {first}");
                assert!(found.iter().all(|&i| i < 440), "recovery ends the finding: {found:?}");
            }
        }
    }

    /// Two thirds of a quiet service's calls gone (sessions lost at a balancer): too mild for the
    /// test for a tenth to weigh in time, found by the test for a third, named as that.
    #[test]
    fn a_drop_to_a_quarter_is_found_by_the_mild_test_and_noise_is_not() {
        let mut delays = Vec::new();
        for seed in 0..20 {
            let calls = poisson(8.0, 600, 100 + seed);
            let windows: Vec<(u64, u64)> = calls.iter().map(|&n| (n, 0)).collect();
            assert!(run(&windows, AnomalyKind::Traffic).is_empty(), "seed {seed}: noise flagged");
            let low = poisson(2.0, 20, 200 + seed);
            let mut dropped = calls.clone();
            dropped[400..420].copy_from_slice(&low);
            let windows: Vec<(u64, u64)> = dropped.iter().map(|&n| (n, 0)).collect();
            let found = run(&windows, AnomalyKind::Traffic);
            delays.push(delay_within(&found, 400..420, &format!("seed {seed}: a 75% drop")));
        }
        assert_median_delay(delays, 6, "a 75% drop at 8 calls a window");
        // The reason says what size of drop the evidence is for.
        let calls = poisson(8.0, 420, 7);
        let windows: Vec<(u64, u64)> = calls
            .iter()
            .enumerate()
            .map(|(i, &n)| (if i >= 400 { n / 4 } else { n }, 0))
            .collect();
        let reasons: Vec<String> = findings(&windows).into_iter().map(|(_, a)| a.reason).collect();
        assert!(reasons.iter().any(|r| r.contains("for a drop of 67% or more")), "{reasons:?}");
    }

    #[test]
    fn an_error_burst_on_a_quiet_service_is_found_and_sporadic_failures_are_not() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut delays = Vec::new();
        for seed in 0..40 {
            let calls = poisson(3.0, 600, seed);
            let fail = |n: u64, p: f64, rng: &mut rand_chacha::ChaCha8Rng| (0..n).filter(|_| rand::Rng::gen_bool(rng, p)).count() as u64;
            let quiet: Vec<(u64, u64)> = calls.iter().map(|&n| (n, fail(n, 0.005, &mut rng))).collect();
            assert!(
                run(&quiet, AnomalyKind::Errors).is_empty(),
                "seed {seed}: sporadic failures flagged"
            );
            // 20% of calls fail for 30 minutes: about 0.6 failures a minute.
            let burst: Vec<(u64, u64)> = calls
                .iter()
                .enumerate()
                .map(|(i, &n)| (n, fail(n, if (400..430).contains(&i) { 0.2 } else { 0.005 }, &mut rng)))
                .collect();
            let found = run(&burst, AnomalyKind::Errors);
            delays.push(delay_within(&found, 400..430, &format!("seed {seed}: burst")));
        }
        assert_median_delay(delays, 8, "error-burst");
    }

    /// Windows from the start of `during` to the first finding, which must fall in it.
    fn delay_within(found: &[usize], during: std::ops::Range<usize>, what: &str) -> usize {
        let first = *found.first().unwrap_or_else(|| panic!("{what} missed"));
        assert!(during.contains(&first), "{what} found at {first}, outside {during:?}");
        first - during.start + 1
    }

    fn assert_median_delay(mut delays: Vec<usize>, most: usize, what: &str) {
        delays.sort_unstable();
        eprintln!("{what} delays (windows): {delays:?}");
        assert!(delays[delays.len() / 2] <= most, "{what} median delay in windows: {delays:?}");
    }

    /// Calls in sessions: a few sessions a minute, each several calls. The same mean as a
    /// Poisson stream, far more empty minutes.
    #[test]
    fn bursty_traffic_is_not_taken_for_silence() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for seed in 0..20 {
            let sessions = poisson(0.6, 2000, seed);
            let calls: Vec<(u64, u64)> = sessions
                .iter()
                .map(|&n| ((0..n).map(|_| rand::Rng::gen_range(&mut rng, 2..9u64)).sum(), 0))
                .collect();
            assert!(run(&calls, AnomalyKind::Traffic).is_empty(), "seed {seed}");
        }
    }

    /// Sessions of 2 to 7 calls, about 12 calls a minute (calls vary five times more than
    /// Poisson), with a burst of 40 calls just before nine sessions in ten stop coming for 20
    /// minutes: the dispersion is learned over hours, so the burst does not make the drop look
    /// like noise, and the drop's first windows are not learned as usual. Found within ten
    /// windows (median); the same traffic without the drop is never flagged.
    #[test]
    fn a_drop_after_a_burst_on_bursty_traffic_is_found_and_the_bursts_are_not() {
        let mut delays = Vec::new();
        for seed in 0..20 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(300 + seed);
            let sessions = poisson(2.5, 600, 400 + seed);
            let mut calls: Vec<u64> = sessions
                .iter()
                .map(|&n| (0..n).map(|_| rand::Rng::gen_range(&mut rng, 2..8u64)).sum())
                .collect();
            calls[399] = 40;
            let windows: Vec<(u64, u64)> = calls.iter().map(|&n| (n, 0)).collect();
            assert!(run(&windows, AnomalyKind::Traffic).is_empty(), "seed {seed}: noise flagged");
            for (i, c) in calls.iter_mut().enumerate().take(420).skip(400) {
                let kept = (0..sessions[i]).filter(|_| rand::Rng::gen_bool(&mut rng, 0.1)).count();
                *c = (0..kept).map(|_| rand::Rng::gen_range(&mut rng, 2..8u64)).sum();
            }
            let windows: Vec<(u64, u64)> = calls.iter().map(|&n| (n, 0)).collect();
            let found = run(&windows, AnomalyKind::Traffic);
            delays.push(delay_within(&found, 400..420, &format!("seed {seed}: the drop")));
        }
        assert_median_delay(delays, 10, "a 90% drop of bursty traffic after a burst");
    }

    /// An entry service (no service calls it) with two routes, and one service it calls, with
    /// a route of its own; per window, the routes with a traffic finding ("entry/b",
    /// "called/x") and whether the entry as a whole had one ("entry").
    fn run_routes(windows: usize, calls: impl Fn(usize) -> (u64, u64, u64)) -> Vec<Vec<&'static str>> {
        let mut d = SequentialDetector::default();
        let mut names = Interner::default();
        let onprem = names.intern("onprem");
        let (entry, called) = ((names.intern("entry"), onprem), (names.intern("called"), onprem));
        let routes = [names.intern("/a"), names.intern("/b"), names.intern("/x")];
        (0..windows)
            .map(|i| {
                let t = i as i64 * MINUTE_MS;
                let (a, b, x) = calls(i);
                let stat = |names: &mut Interner, entity: u32, key: EntityKey, n: u64| stat_of(names, t, entity, key, n);
                let route = |(service, provider): (Sym, Sym), route| EntityKey::Route { service, provider, route };
                let stats = vec![
                    stat(
                        &mut names,
                        0,
                        EntityKey::Service {
                            service: entry.0,
                            provider: onprem,
                        },
                        a + b,
                    ),
                    stat(
                        &mut names,
                        1,
                        EntityKey::Service {
                            service: called.0,
                            provider: onprem,
                        },
                        x,
                    ),
                    stat(&mut names, 2, EntityKey::Hop { from: entry, to: called }, x),
                    stat(&mut names, 3, route(entry, routes[0]), a),
                    stat(&mut names, 4, route(entry, routes[1]), b),
                    stat(&mut names, 5, route(called, routes[2]), x),
                ];
                let mut found: Vec<&'static str> = traffic_found(&mut d, &names, t, &stats)
                    .iter()
                    .map(|a| match (a.service.as_str(), a.route.as_deref()) {
                        ("entry", Some("/b")) => "entry/b",
                        ("entry", None) => "entry",
                        ("called", Some(_)) => "called/x",
                        _ => "other",
                    })
                    .collect();
                found.dedup();
                found
            })
            .collect()
    }

    /// Clients that stop calling one step of a flow: the entry's total loses a third and its
    /// own test may not see it, the route's does, within minutes. A called service's route that
    /// goes quiet is its caller's to explain (the caller is judged), not judged as a route.
    #[test]
    fn a_route_its_clients_stop_calling_is_found_on_the_entry_and_left_to_callers_behind_it() {
        let mut delays = Vec::new();
        for seed in 0..10 {
            let [a, b, x] = [8.0, 4.0, 5.0].map(|rate| poisson(rate, 200, 500 + seed));
            let quiet = run_routes(200, |i| (a[i], b[i], x[i]));
            assert!(quiet.concat().is_empty(), "seed {seed}: noise flagged: {quiet:?}");
            let skipped = run_routes(200, |i| (a[i], if (150..170).contains(&i) { 0 } else { b[i] }, x[i]));
            let found: Vec<usize> = (0..200).filter(|&i| skipped[i].contains(&"entry/b")).collect();
            delays.push(delay_within(&found, 150..170, &format!("seed {seed}: the skipped route")));
            let behind = run_routes(200, |i| (a[i], b[i], if (150..170).contains(&i) { 0 } else { x[i] }));
            assert!(
                !behind.concat().contains(&"called/x"),
                "seed {seed}: a called service's route was judged: {behind:?}"
            );
        }
        assert_median_delay(delays, 6, "a route gone silent at 4 calls a window");
    }

    /// Runs per-window calls through a detector: per window, (found a drop, held back).
    fn run_drops(windows: &[u64]) -> Vec<(bool, bool)> {
        let mut d = SequentialDetector::default();
        let mut names = Interner::default();
        windows
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let st = service_window(&mut names, i as i64 * MINUTE_MS, n, 0, 100.0);
                let out = crate::detect::testing::close_one(&mut d, &names, st);
                let drop = out.iter().find(|a| a.kind == AnomalyKind::Traffic);
                (drop.is_some(), drop.is_some_and(|a| a.held_by.as_deref() == Some(LEARNED_PAUSE)))
            })
            .collect()
    }

    /// The predictive chance knows its sample: one short pause says little, many say much.
    #[test]
    fn a_pause_s_chance_to_last_shrinks_with_the_pauses_seen() {
        assert_eq!(pause_outlasts(&[], 3), 0.0);
        let one = pause_outlasts(&[2], 5);
        let eight = pause_outlasts(&[1; 8], 4);
        assert!(one > 0.25 && one < 0.3, "{one}");
        assert!(eight < PAUSE_LEVEL, "{eight}");
        assert!(pause_outlasts(&[2, 2], 2) > pause_outlasts(&[2, 2], 4));
    }

    /// A client that pauses for two minutes every hour: the first pause is news, the next ones
    /// are held back and say why; an outage is reported once it outlasts the longest a pause can
    /// be; a long drop is never learned as a pause.
    #[test]
    fn pauses_a_service_is_known_for_are_held_and_outages_are_not() {
        let mut calls = poisson(14.0, 600, 5);
        silence(&mut calls, &[100, 160, 220, 280], 2);
        silence(&mut calls, &[340], 20);
        let out = run_drops(&calls);
        let reported = |r: std::ops::Range<usize>| out[r].iter().any(|&(f, h)| f && !h);
        let held = |r: std::ops::Range<usize>| out[r].iter().any(|&(f, h)| f && h);
        assert!(reported(100..104), "the first pause is news");
        for start in [160, 220, 280] {
            assert!(
                !reported(start..start + 4) && held(start..start + 4),
                "pause at {start}: {:?}",
                &out[start..start + 4]
            );
        }
        let first = first_reported(&out, 340..360);
        assert!(first <= 340 + PAUSE_WINDOWS as usize + 1, "reported at {first}");
        // Twenty minutes of silence is no pause: the same again is reported as soon.
        silence(&mut calls, &[400], 20);
        let out = run_drops(&calls);
        let first = first_reported(&out, 400..420);
        assert!(first <= 400 + PAUSE_WINDOWS as usize + 1, "reported at {first}");
    }

    /// Empties `len` windows of `calls` from each of `starts`.
    fn silence(calls: &mut [u64], starts: &[usize], len: usize) {
        for &start in starts {
            calls[start..start + len].fill(0);
        }
    }

    /// The first window in `during` with a drop reported (found and not held back).
    fn first_reported(out: &[(bool, bool)], during: std::ops::Range<usize>) -> usize {
        let what = format!("a drop in {during:?} is reported");
        during.into_iter().find(|&i| out[i].0 && !out[i].1).expect(&what)
    }

    /// On a quiet service a drop takes several silent windows to build half the threshold's
    /// evidence; they count in its length. A service known for 3-minute pauses that goes silent
    /// is reported once it has been silent for longer than a pause can be, counted from its
    /// first silent window (it was counted from the window that reached half the threshold,
    /// which held an 8-minute outage of a quiet entry service back to its end).
    #[test]
    fn a_quiet_service_s_outage_is_counted_from_its_first_silent_window() {
        let mut calls = poisson(4.0, 700, 11);
        silence(&mut calls, &[200, 280, 360, 440], 3);
        silence(&mut calls, &[600], 20);
        let out = run_drops(&calls);
        assert!(
            out[595..600].iter().all(|&(f, _)| !f),
            "no drop before the outage: {:?}",
            &out[595..600]
        );
        let first = first_reported(&out, 600..620);
        assert!(
            first < 600 + PAUSE_WINDOWS as usize + 1,
            "reported at window {} of the outage: {:?}",
            first - 599,
            &out[600..610]
        );
    }

    /// Window `t`'s stat of `n` calls for entity `entity` with key `key`.
    fn stat_of(names: &mut Interner, t: Millis, entity: u32, key: EntityKey, n: u64) -> WindowStat {
        let mut st = service_window(names, t, n, 0, 100.0);
        (st.entity, st.key) = (entity, key);
        st
    }

    /// Closes the complete window at `t` holding `stats`: the traffic findings.
    fn traffic_found(d: &mut SequentialDetector, names: &Interner, t: Millis, stats: &[WindowStat]) -> Vec<Anomaly> {
        let mut out = closed(d, names, t, stats);
        out.retain(|a| a.kind == AnomalyKind::Traffic);
        out
    }

    /// Closes the complete window at `t` holding `stats`: every finding.
    fn closed(d: &mut SequentialDetector, names: &Interner, t: Millis, stats: &[WindowStat]) -> Vec<Anomaly> {
        let w = WindowContext {
            start: t,
            end: t + MINUTE_MS,
            stats,
            names,
            complete: true,
        };
        let mut out = Vec::new();
        d.close_window(&w, &mut out);
        out
    }

    /// A callee slow for one quiet caller only (the network between them): a tenth of its
    /// calls, which its own test weighs as noise; the hop's test finds it within ten windows
    /// (median) and names the caller, and the same traffic without the delay is never flagged.
    #[test]
    fn a_callee_slow_for_one_quiet_caller_is_found_on_that_hop() {
        use rand_distr::LogNormal;
        let mut delays = Vec::new();
        for seed in 0..10 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(700 + seed);
            let (busy, quiet) = (poisson(12.0, 400, 800 + seed), poisson(1.5, 400, 900 + seed));
            let ln = LogNormal::new(40f64.ln(), 0.4).unwrap();
            let mut run = |delayed: bool| -> Vec<usize> {
                let mut d = SequentialDetector::default();
                let mut names = Interner::default();
                let node = |names: &mut Interner, s: &str| (names.intern(s), names.intern("onprem"));
                let (a, b, ledger) = (node(&mut names, "a"), node(&mut names, "b"), node(&mut names, "ledger"));
                let mut found = Vec::new();
                for i in 0..400 {
                    let t = i as i64 * MINUTE_MS;
                    let extra = if delayed && (300..320).contains(&i) { 200.0 } else { 0.0 };
                    let from_a: Vec<(f64, u64)> = (0..busy[i]).map(|_| (ln.sample(&mut rng), 1)).collect();
                    let from_b: Vec<(f64, u64)> = (0..quiet[i]).map(|_| (ln.sample(&mut rng) + extra, 1)).collect();
                    let timed = |names: &mut Interner, entity, key, calls: &[(f64, u64)]| {
                        let mut st = stat_of(names, t, entity, key, calls.len() as u64);
                        st.latencies = crate::model::window::CallLatencies::of(calls);
                        st
                    };
                    let all: Vec<(f64, u64)> = from_a.iter().chain(&from_b).copied().collect();
                    let stats = vec![
                        timed(
                            &mut names,
                            0,
                            EntityKey::Service {
                                service: ledger.0,
                                provider: ledger.1,
                            },
                            &all,
                        ),
                        timed(&mut names, 1, EntityKey::Hop { from: a, to: ledger }, &from_a),
                        timed(&mut names, 2, EntityKey::Hop { from: b, to: ledger }, &from_b),
                    ];
                    let out = closed(&mut d, &names, t, &stats);
                    if out
                        .iter()
                        .any(|x| x.kind == AnomalyKind::Latency && x.hop_from.as_deref() == Some("b/onprem"))
                    {
                        found.push(i);
                    }
                    assert!(
                        out.iter().all(|x| x.hop_from.as_deref() != Some("a/onprem")),
                        "seed {seed}: the busy caller's hop flagged at {i}"
                    );
                }
                found
            };
            assert!(run(false).is_empty(), "seed {seed}: noise flagged");
            delays.push(delay_within(&run(true), 300..320, &format!("seed {seed}: the slow hop")));
        }
        assert_median_delay(delays, 10, "a callee 200 ms slower for a caller of 1.5 calls a window");
    }

    /// A gateway calling two services. `calls(i)` gives window i's calls to the gateway and
    /// over each hop; returns, per window, the services with a traffic finding.
    fn run_mesh(windows: usize, calls: impl Fn(usize) -> (u64, u64, u64)) -> Vec<Vec<&'static str>> {
        let mut d = SequentialDetector::default();
        let mut names = Interner::default();
        let node = |names: &mut Interner, s: &str| (names.intern(s), names.intern("onprem"));
        let gateway = node(&mut names, "gateway");
        let orders = node(&mut names, "orders");
        let cart = node(&mut names, "cart");
        (0..windows)
            .map(|i| {
                let t = i as i64 * MINUTE_MS;
                let (g, o, c) = calls(i);
                let stat = |names: &mut Interner, entity: u32, key: EntityKey, n: u64| stat_of(names, t, entity, key, n);
                let service = |(service, provider)| EntityKey::Service { service, provider };
                let stats = vec![
                    stat(&mut names, 0, service(gateway), g),
                    stat(&mut names, 1, service(orders), o),
                    stat(&mut names, 2, service(cart), c),
                    stat(&mut names, 3, EntityKey::Hop { from: gateway, to: orders }, o),
                    stat(&mut names, 4, EntityKey::Hop { from: gateway, to: cart }, c),
                ];
                let mut found: Vec<&'static str> = traffic_found(&mut d, &names, t, &stats)
                    .iter()
                    .map(|a| match a.service.as_str() {
                        "gateway" => "gateway",
                        "orders" => "orders",
                        _ => "cart",
                    })
                    .collect();
                found.dedup();
                found
            })
            .collect()
    }

    /// A gateway (10 calls a window) calling orders (2 a window, one call in five) and cart
    /// (4): per window, `(gateway's calls, its failures, orders' calls, cart's calls)` in, the
    /// windows with a silent-callee finding on orders out.
    fn silent_callee_found(windows: &[(u64, u64, u64, u64)]) -> Vec<usize> {
        let mut d = SequentialDetector::default();
        let mut names = Interner::default();
        let node = |names: &mut Interner, s: &str| (names.intern(s), names.intern("onprem"));
        let (gateway, orders, cart) = (node(&mut names, "gateway"), node(&mut names, "orders"), node(&mut names, "cart"));
        let service = |(service, provider)| EntityKey::Service { service, provider };
        let mut found = Vec::new();
        for (i, &(g, failed, o, c)) in windows.iter().enumerate() {
            let t = i as i64 * MINUTE_MS;
            let mut caller = stat_of(&mut names, t, 0, service(gateway), g);
            caller.errors_5xx = failed;
            let stats = vec![
                caller,
                stat_of(&mut names, t, 1, service(orders), o),
                stat_of(&mut names, t, 2, service(cart), c),
                stat_of(&mut names, t, 3, EntityKey::Hop { from: gateway, to: orders }, o),
                stat_of(&mut names, t, 4, EntityKey::Hop { from: gateway, to: cart }, c),
            ];
            let out = closed(&mut d, &names, t, &stats);
            if let Some(a) = out.iter().find(|a| a.metric.as_deref() == Some(SILENT_CALLEE_METRIC)) {
                assert_eq!((a.service.as_str(), a.kind), ("orders", AnomalyKind::Journey), "{a:?}");
                assert!(a.reason.contains("gateway/onprem has been failing"), "{}", a.reason);
                found.push(i);
            }
        }
        found
    }

    /// A callee that is down logs nothing and its caller fails at once: the caller's proven
    /// failures are laid at the silent callee's door within the outage. Not when the caller
    /// fails by itself (it still calls its callees), nor when it stops calling one without
    /// failing, nor on noise.
    #[test]
    fn a_failing_caller_s_silent_callee_is_named() {
        let mut delays = Vec::new();
        for seed in 0..10 {
            let [orders, cart] = [2.0, 4.0].map(|rate| poisson(rate, 150, 200 + seed));
            let usual = |i: usize| (orders[i] + cart[i] + 4, 0, orders[i], cart[i]);
            let outage = |i: usize| {
                if (100..110).contains(&i) {
                    // Each call that would reach orders fails at the gateway.
                    (orders[i].max(1) + cart[i] + 4, orders[i].max(1), 0, cart[i])
                } else {
                    usual(i)
                }
            };
            let down: Vec<_> = (0..150).map(outage).collect();
            let found = silent_callee_found(&down);
            assert!(found.iter().all(|i| (100..112).contains(i)), "seed {seed}: {found:?}");
            delays.push(delay_within(&found, 100..110, &format!("seed {seed}: orders down")));

            let noise: Vec<_> = (0..150).map(usual).collect();
            assert!(silent_callee_found(&noise).is_empty(), "seed {seed}: noise");
            // The gateway fails a third of its calls by itself: it still calls orders.
            let own: Vec<_> = (0..150)
                .map(|i| {
                    let (g, _, o, c) = usual(i);
                    (g, if (100..110).contains(&i) { g / 3 + 1 } else { 0 }, o, c)
                })
                .collect();
            assert!(silent_callee_found(&own).is_empty(), "seed {seed}: the gateway's own failures");
            // The gateway stops calling orders and nothing fails: a drop, not a failing hop.
            let stopped: Vec<_> = (0..150)
                .map(|i| {
                    let (g, f, o, c) = usual(i);
                    (g, f, if (100..110).contains(&i) { 0 } else { o }, c)
                })
                .collect();
            assert!(silent_callee_found(&stopped).is_empty(), "seed {seed}: stopped calling");
        }
        assert_median_delay(delays, 5, "a callee of 2 calls a window down behind a failing caller");
    }

    /// Traffic loss propagates caller → callee: when the gateway loses its clients only the
    /// gateway has dropped; when it stops calling one service, that service has.
    #[test]
    fn a_drop_that_follows_the_callers_is_theirs_and_one_that_does_not_is_the_callee_s() {
        for seed in 0..10 {
            let [g, o, c] = [30.0, 20.0, 10.0].map(|rate| poisson(rate, 120, seed));
            // Each call survives with chance 1/20 (the clients lost are lost at every hop
            // behind the entry, each service keeping about its share).
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(50 + seed);
            let mut kept = |n: u64| (0..n).filter(|_| rand::Rng::gen_bool(&mut rng, 0.05)).count() as u64;
            let thinned: Vec<(u64, u64, u64)> = (0..120)
                .map(|i| {
                    if (60..90).contains(&i) {
                        (kept(g[i]), kept(o[i]), kept(c[i]))
                    } else {
                        (g[i], o[i], c[i])
                    }
                })
                .collect();
            let clients_gone = run_mesh(120, |i| thinned[i]);
            let found: Vec<&str> = clients_gone.concat();
            assert!(found.contains(&"gateway"), "seed {seed}: the entry's drop missed: {clients_gone:?}");
            assert!(
                found.iter().all(|&s| s == "gateway"),
                "seed {seed}: callees that followed their caller were judged to drop: {clients_gone:?}"
            );
            let stopped_calling = run_mesh(120, |i| (g[i], if (60..90).contains(&i) { 0 } else { o[i] }, c[i]));
            let found: Vec<&str> = stopped_calling.concat();
            assert!(
                found.contains(&"orders"),
                "seed {seed}: the callee's drop missed: {stopped_calling:?}"
            );
            assert!(found.iter().all(|&s| s == "orders"), "seed {seed}: {stopped_calling:?}");
        }
    }

    /// Runs per-window latencies (ms of each call) through a detector: the windows with a
    /// slow-call finding.
    fn run_slow(windows: &[Vec<f64>]) -> Vec<usize> {
        let mut d = SequentialDetector::default();
        let mut names = Interner::default();
        let mut found = Vec::new();
        for (i, calls) in windows.iter().enumerate() {
            let mut st = service_window(&mut names, i as i64 * MINUTE_MS, calls.len() as u64, 0, 100.0);
            let mut sorted = calls.clone();
            sorted.sort_by(f64::total_cmp);
            st.p50_ms = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
            st.latencies = crate::model::window::CallLatencies::of(&calls.iter().map(|&v| (v, 1)).collect::<Vec<_>>());
            let out = crate::detect::testing::close_one(&mut d, &names, st);
            if out.iter().any(|a| a.metric.as_deref() == Some("latency.slow_share.sequential")) {
                found.push(i);
            }
        }
        found
    }

    /// A quiet service (2 to 6 calls a minute, log-normal latency): a doubling of every call's
    /// time is found within ten windows and noise is not, in ten hours. A service with two modes
    /// (a slow one 6x the fast) is not taken for slow: its own p90 is in the slow mode. (Its
    /// doubling is seen only through that mode: about 30% of calls pass the limit, not 50%.)
    #[test]
    fn slow_calls_on_a_quiet_service_add_up_and_noise_does_not() {
        use rand_distr::LogNormal;
        let mut delays = Vec::new();
        for (rate, two_modes) in [(2.0, false), (4.0, true), (6.0, false)] {
            for seed in 0..10 {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + seed);
                let counts = poisson(rate, 600, seed);
                let ln = LogNormal::new(50f64.ln(), 0.5).unwrap();
                let call = |rng: &mut rand_chacha::ChaCha8Rng| {
                    let v = ln.sample(rng);
                    if two_modes && rand::Rng::gen_bool(rng, 0.4) {
                        v * 6.0
                    } else {
                        v
                    }
                };
                let quiet: Vec<Vec<f64>> = counts.iter().map(|&n| (0..n).map(|_| call(&mut rng)).collect()).collect();
                assert!(run_slow(&quiet).is_empty(), "rate {rate} seed {seed}: noise flagged");
                if two_modes {
                    continue;
                }
                let slow: Vec<Vec<f64>> = quiet
                    .iter()
                    .enumerate()
                    .map(|(i, w)| w.iter().map(|&v| if (400..420).contains(&i) { v * 2.0 } else { v }).collect())
                    .collect();
                let found = run_slow(&slow);
                delays.push(delay_within(&found, 400..420, &format!("rate {rate} seed {seed}: slowdown")));
            }
        }
        assert_median_delay(delays, 10, "slow-call");
    }

    /// A quiet service whose calls' time follows the day's load (the afternoon's usual about
    /// 1.9x the night's, as `simulate --latency-follows-load 0.5` makes it): once the daily
    /// shape has been seen on earlier days, the rise to the afternoon is not taken for slow
    /// calls (a limit learned over the last hours alone lags behind it), and a doubling at the
    /// night's trough, below the day's usual time, is still found within ten windows.
    #[test]
    fn a_quiet_service_s_latency_that_follows_the_day_is_not_slow_and_a_night_slowdown_is() {
        use rand_distr::LogNormal;
        let days = 6;
        let night = 5 * 1440 + 3 * 60;
        let mut delays = Vec::new();
        for seed in 0..8 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(300 + seed);
            let ln = LogNormal::new(0.0, 0.35).unwrap();
            let windows: Vec<Vec<f64>> = poisson(5.0, days * 1440, seed)
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let usual = 50.0 * crate::simulate::diurnal(i as Millis * MINUTE_MS).sqrt();
                    (0..n).map(|_| usual * ln.sample(&mut rng)).collect()
                })
                .collect();
            let after_two_days: Vec<usize> = run_slow(&windows).into_iter().filter(|&i| i >= 2 * 1440).collect();
            assert!(
                after_two_days.is_empty(),
                "seed {seed}: the day's rise taken for slow calls at windows {after_two_days:?}"
            );
            let slow: Vec<Vec<f64>> = windows
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    w.iter()
                        .map(|&v| if (night..night + 20).contains(&i) { v * 2.0 } else { v })
                        .collect()
                })
                .collect();
            let found: Vec<usize> = run_slow(&slow).into_iter().filter(|&i| i >= 2 * 1440).collect();
            delays.push(delay_within(
                &found,
                night..night + 20,
                &format!("seed {seed}: a slowdown at night"),
            ));
        }
        assert_median_delay(delays, 10, "slow calls at night");
    }

    /// After a slowdown ends, the windows whose own calls look usual are not reported (the sum,
    /// capped, takes a few windows to fall below the threshold); a slowdown that never ends is
    /// learned as the service's usual latency after [`RELEARN_AFTER`] windows and reported no
    /// more.
    #[test]
    fn slow_calls_stop_being_reported_when_they_end_or_last() {
        use rand_distr::LogNormal;
        let (mut after_end, mut long_after_start) = (0, 0);
        for seed in 0..10 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(200 + seed);
            let counts = poisson(4.0, 600, seed);
            let ln = LogNormal::new(50f64.ln(), 0.5).unwrap();
            let quiet: Vec<Vec<f64>> = counts.iter().map(|&n| (0..n).map(|_| ln.sample(&mut rng)).collect()).collect();
            let doubled = |during: std::ops::Range<usize>| -> Vec<Vec<f64>> {
                quiet
                    .iter()
                    .enumerate()
                    .map(|(i, w)| w.iter().map(|&v| if during.contains(&i) { v * 2.0 } else { v }).collect())
                    .collect()
            };
            let found = run_slow(&doubled(400..420));
            assert!(found.iter().any(|i| (400..420).contains(i)), "seed {seed}: the slowdown is found");
            after_end += found.iter().filter(|&&i| (421..460).contains(&i)).count();
            let found = run_slow(&doubled(400..600));
            long_after_start += found.iter().filter(|&&i| i >= 400 + 3 * RELEARN_AFTER as usize).count();
        }
        // Chance alone (a usual window with a few slow calls) allows about one per run.
        assert!(after_end <= 10, "{after_end} windows reported after the slowdowns ended");
        assert!(
            long_after_start <= 10,
            "{long_after_start} windows reported long into lasting slowdowns"
        );
    }

    #[test]
    fn state_survives_a_checkpoint() {
        let mut d = SequentialDetector::default();
        d.services.insert(
            7,
            ServiceState {
                rate: 3.5,
                drop_sum: 4.0,
                ..Default::default()
            },
        );
        let bytes = crate::detect::Persist::save_state(&mut d).unwrap();
        let mut e = SequentialDetector::default();
        crate::detect::Persist::load_state(&mut e, &bytes).unwrap();
        assert_eq!(e.services[&7].rate, 3.5);
        assert_eq!(e.services[&7].drop_sum, 4.0);
    }
}
