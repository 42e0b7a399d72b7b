//! Small robust-statistics helpers shared by the detectors.

/// Median of a slice (copied; the input is left as it is).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    median_in_place(&mut v)
}

pub fn median_in_place(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let m = *m;
    if v.len() % 2 == 1 {
        m
    } else {
        let lower = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + m) / 2.0
    }
}

/// Median and the MAD scaled to a normal standard deviation (×1.4826).
pub fn median_mad(values: &[f64]) -> (f64, f64) {
    let m = median(values);
    let mut dev: Vec<f64> = values.iter().map(|x| (x - m).abs()).collect();
    (m, 1.4826 * median_in_place(&mut dev))
}

/// The q-quantile (0..=1) by linear interpolation of the sorted values.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The evidence a share of calls in one window must carry before it is a finding:
/// -ln P(so many by chance) of at least 12. A worker judges some 10^5 entity windows a day
/// (a hundred services, routes and hops, 1,440 minutes); at e^-12 (6·10^-6) chance alone
/// flags about one of them a day, the false-alarm bar of the sequential tests too. A looser
/// bar on each window is a looser one on the day: e^-7 is a hundred chance findings.
pub const WINDOW_EVIDENCE: f64 = 12.0;

/// A lower bound on -ln P(at least `k` of `n` by chance) when each happens with chance `p0`:
/// n·KL(k/n ‖ p0) (Chernoff); 0 when `k` is no more than expected. It knows its sample: three
/// of twelve at 1% is e^-8, five of five e^-23.
pub fn share_evidence(k: u64, n: u64, p0: f64) -> f64 {
    let p0 = p0.clamp(1e-9, 1.0 - 1e-9);
    if n == 0 || (k as f64) <= p0 * n as f64 {
        return 0.0;
    }
    let f = k as f64 / n as f64;
    let kl = |a: f64, b: f64| if a <= 0.0 { 0.0 } else { a * (a / b).ln() };
    n as f64 * (kl(f, p0) + kl(1.0 - f, 1.0 - p0))
}

/// Maps a deviation in robust standard units to the common 0-100 score.
/// z = 4 scores about 37, z = 8 about 60, z = 16 about 84.
pub fn score_from_z(z: f64) -> f64 {
    if !z.is_finite() || z <= 0.0 {
        return if z.is_infinite() && z > 0.0 { 100.0 } else { 0.0 };
    }
    (100.0 * (1.0 - (-z / 8.7).exp())).min(100.0)
}

/// The deviation a score stands for: the inverse of [`score_from_z`] (100 is infinite).
pub fn z_from_score(score: f64) -> f64 {
    if score >= 100.0 {
        return f64::INFINITY;
    }
    -8.7 * (1.0 - score.max(0.0) / 100.0).ln()
}

/// Per-column mean and standard deviation (at least `min_std`) of fixed-width rows.
pub fn column_mean_std<const N: usize>(rows: &[[f64; N]], min_std: f64) -> ([f64; N], [f64; N]) {
    let n = rows.len().max(1) as f64;
    let mut mean = [0.0; N];
    let mut std = [0.0; N];
    for r in rows {
        for j in 0..N {
            mean[j] += r[j] / n;
        }
    }
    for r in rows {
        for j in 0..N {
            std[j] += (r[j] - mean[j]).powi(2) / n;
        }
    }
    for s in &mut std {
        *s = s.sqrt().max(min_std);
    }
    (mean, std)
}

/// A fixed-capacity ring of recent values.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct Ring {
    values: Vec<f64>,
    next: usize,
    cap: usize,
}

impl Ring {
    pub fn new(cap: usize) -> Self {
        Ring {
            values: Vec::with_capacity(cap),
            next: 0,
            cap,
        }
    }
    pub fn push(&mut self, v: f64) {
        if self.values.len() < self.cap {
            self.values.push(v);
        } else {
            self.values[self.next] = v;
        }
        self.next = (self.next + 1) % self.cap;
    }
    pub fn len(&self) -> usize {
        self.values.len()
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    pub fn values(&self) -> &[f64] {
        &self.values
    }
    /// Values from oldest to newest.
    pub fn ordered(&self) -> Vec<f64> {
        if self.values.len() < self.cap {
            self.values.clone()
        } else {
            let mut v = self.values[self.next..].to_vec();
            v.extend_from_slice(&self.values[..self.next]);
            v
        }
    }
}

/// Exponentially weighted mean and variance.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, Default)]
pub struct Ewm {
    pub mean: f64,
    pub var: f64,
    pub n: u64,
}

impl Ewm {
    pub fn update(&mut self, x: f64, alpha: f64) {
        self.n += 1;
        if self.n == 1 {
            self.mean = x;
            self.var = 0.0;
            return;
        }
        // Warm up as a plain mean so early values are not over-weighted.
        let a = alpha.max(1.0 / self.n as f64);
        let d = x - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
    }
    pub fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// The usual level of a log-scale quantity by hour of day (UTC), for what follows the clock:
/// latency follows the load, so a service's usual call at the afternoon peak can take twice its
/// night's. Each hour's level is the mean of its windows' mean log values on each day it was
/// seen, averaged over the last few days (a memory of about [`HourProfile::MEMORY_DAYS`]). A
/// daily shape is believed once seen on earlier days: an hour counts for half after one day and
/// in full after two, and never from the day being learned (one day's hours say as much about
/// that day's incidents as about the clock). [`HourProfile::factor`] is how far the usual at a
/// time is above (> 1) or below the day's, interpolated between the centres of the two nearest
/// hours so that it has no steps. Empty (flat) until learned from; 24 levels once learning.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default)]
pub struct HourProfile {
    level: Vec<f32>,
    /// Days each hour was learned from (up to 255), and the last of them.
    days: Vec<u8>,
    last_day: Vec<u32>,
    /// The hour being learned: its day x 24 + hour, the sum of its windows' mean logs, windows.
    current: Option<(u32, f64, u32)>,
}

impl HourProfile {
    const SLOTS: usize = 24;
    /// Days over which an hour's level is averaged (older days fade).
    const MEMORY_DAYS: u8 = 3;

    fn day(t: crate::model::time::Millis) -> u32 {
        t.div_euclid(crate::model::time::DAY_MS).max(0) as u32
    }

    /// How much an hour counts at `today`: the days it was seen before today, two for all.
    fn weight(&self, slot: usize, today: u32) -> f64 {
        let before = self.days[slot].saturating_sub(u8::from(self.last_day[slot] == today));
        (f64::from(before) / 2.0).min(1.0)
    }

    /// The usual at `t` against the day's usual (1 when nothing is known).
    pub fn factor(&self, t: crate::model::time::Millis) -> f64 {
        if self.level.is_empty() {
            return 1.0;
        }
        let today = Self::day(t);
        let (mut sum, mut weights) = (0.0, 0.0);
        for slot in 0..Self::SLOTS {
            let w = self.weight(slot, today);
            sum += w * f64::from(self.level[slot]);
            weights += w;
        }
        if weights <= 0.0 {
            return 1.0;
        }
        let day = sum / weights;
        let offset = |slot: usize| (f64::from(self.level[slot]) - day) * self.weight(slot, today);
        let pos = crate::model::time::hour_of_day(t) - 0.5;
        let below = pos.floor();
        let frac = pos - below;
        let s0 = (below as i64).rem_euclid(Self::SLOTS as i64) as usize;
        let s1 = (s0 + 1) % Self::SLOTS;
        ((1.0 - frac) * offset(s0) + frac * offset(s1)).exp()
    }

    /// Learns one window's mean log value at `t` (an hour is folded into its level when the
    /// first window of another hour comes).
    pub fn learn(&mut self, t: crate::model::time::Millis, mean_log: f64) {
        if self.level.is_empty() {
            self.level = vec![0.0; Self::SLOTS];
            self.days = vec![0; Self::SLOTS];
            self.last_day = vec![0; Self::SLOTS];
        }
        let hour = (crate::model::time::hour_of_day(t) as u32).min(Self::SLOTS as u32 - 1);
        let key = Self::day(t) * Self::SLOTS as u32 + hour;
        match self.current {
            Some((k, ref mut sum, ref mut n)) if k == key => {
                *sum += mean_log;
                *n += 1;
            }
            previous => {
                if let Some((k, sum, n)) = previous {
                    self.fold(k, sum / f64::from(n.max(1)));
                }
                self.current = Some((key, mean_log, 1));
            }
        }
    }

    fn fold(&mut self, key: u32, mean: f64) {
        let slot = (key % Self::SLOTS as u32) as usize;
        let days = self.days[slot].saturating_add(1);
        self.days[slot] = days;
        self.last_day[slot] = key / Self::SLOTS as u32;
        let level = f64::from(self.level[slot]);
        self.level[slot] = (level + (mean - level) / f64::from(days.min(Self::MEMORY_DAYS))) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let (m, s) = median_mad(&[1.0, 2.0, 3.0, 4.0, 100.0]);
        assert_eq!(m, 3.0);
        assert!((s - 1.4826).abs() < 1e-9);
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(&[0.0, 10.0], 0.5), 5.0);
        assert_eq!(quantile(&[5.0, 1.0, 3.0], 1.0), 5.0);
    }

    #[test]
    fn score_is_monotone_and_bounded() {
        let mut last = 0.0;
        for z in [0.5, 2.0, 4.0, 8.0, 16.0, 1e9] {
            let s = score_from_z(z);
            assert!(s > last && s <= 100.0);
            last = s;
        }
        assert_eq!(score_from_z(-3.0), 0.0);
        assert_eq!(score_from_z(f64::NAN), 0.0);
        for z in [0.5, 4.0, 26.0] {
            assert!((z_from_score(score_from_z(z)) - z).abs() < 1e-9, "{z}");
        }
        assert!(z_from_score(100.0).is_infinite());
    }

    #[test]
    fn column_stats() {
        let (m, s) = column_mean_std(&[[1.0, 5.0], [3.0, 5.0]], 0.1);
        assert_eq!(m, [2.0, 5.0]);
        assert_eq!(s, [1.0, 0.1]);
    }

    #[test]
    fn ring_keeps_the_newest() {
        let mut r = Ring::new(3);
        for i in 0..5 {
            r.push(i as f64);
        }
        assert_eq!(r.ordered(), vec![2.0, 3.0, 4.0]);
    }

    #[test]
    fn ewm_tracks_mean() {
        let mut e = Ewm::default();
        for _ in 0..1000 {
            e.update(5.0, 0.01);
        }
        assert!((e.mean - 5.0).abs() < 1e-9 && e.std() < 1e-9);
    }

    #[test]
    fn an_hour_profile_believes_a_daily_shape_seen_on_earlier_days() {
        use crate::model::time::{DAY_MS, HOUR_MS, MINUTE_MS};
        let mut p = HourProfile::default();
        assert_eq!(p.factor(0), 1.0);
        // The usual doubles from 03:00 to 15:00 and halves back (log level ±ln√2 around the day's).
        let usual = |t: i64| ((crate::model::time::hour_of_day(t) - 9.0) / 24.0 * std::f64::consts::TAU).sin() * 2f64.sqrt().ln();
        let learn_day = |p: &mut HourProfile, d: i64| {
            for m in 0..24 * 60 {
                let t = d * DAY_MS + m * MINUTE_MS;
                p.learn(t, usual(t));
            }
        };
        let peak_over_trough = |p: &HourProfile, d: i64| p.factor(d * DAY_MS + 15 * HOUR_MS) / p.factor(d * DAY_MS + 3 * HOUR_MS);
        learn_day(&mut p, 0);
        // Never from the day being learned; for half after one day; in full after two.
        assert_eq!(peak_over_trough(&p, 0), 1.0);
        let half = peak_over_trough(&p, 1);
        assert!((half - 2f64.sqrt()).abs() < 0.05, "after one day: {half}");
        learn_day(&mut p, 1);
        learn_day(&mut p, 2);
        let full = peak_over_trough(&p, 3);
        assert!((full - 2.0).abs() < 0.1, "after three days: {full}");
        // No steps between hours.
        let (a, b) = (p.factor(3 * DAY_MS + 10 * HOUR_MS - 1), p.factor(3 * DAY_MS + 10 * HOUR_MS + 1));
        assert!((a / b - 1.0).abs() < 1e-3, "{a} {b}");
    }
}
