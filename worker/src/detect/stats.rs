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
}
