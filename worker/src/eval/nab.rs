//! The Numenta Anomaly Benchmark, scored by the project's own NAB-compatible scorer.
//!
//! Scoring follows NAB's rules: each labelled window rewards its first detection by a scaled
//! sigmoid of how early it came (`2 / (1 + e^(5y)) - 1`, y = -1 at the window's start, 0 at its
//! end); a detection outside every window costs `fp_weight` times the sigmoid of how far past the
//! previous window it is (a full `fp_weight` with no window before it); a window with no
//! detection costs `fn_weight`; rows in the probation period (the first 15% of a file, at most
//! 750 rows) count for nothing. Raw scores summed over all files are normalised so that the
//! null detector scores 0 and the perfect one 100; one threshold is chosen for the whole
//! corpus per profile, as NAB's optimiser does for every scoreboard entry.
//!
//! Two series detectors are scored ([`SeriesDetector`]): the baseline's rule on one series (a
//! robust z-score of each value and of its change against the last [`HISTORY`] points, turned
//! into an anomaly likelihood, quiet for [`REFRACTORY`] rows after a detection), and the
//! contextual sequence memory ([`ContextMemory`], which rests by itself after an alert). Beside
//! NAB's corpus-wide threshold, every result carries a held-out score: files alternate between
//! two halves and each half is scored at the threshold chosen on the other.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use crate::detect::context_memory::ContextMemory;
use crate::detect::stats::median_mad;

/// Points of history a value is judged against.
pub const HISTORY: usize = 288;
/// Rows a detection silences the detector for.
pub const REFRACTORY: usize = 150;

/// NAB's cost weights for one profile.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostMatrix {
    pub tp_weight: f64,
    pub fn_weight: f64,
    pub fp_weight: f64,
}

/// One labelled series: its anomaly windows as row ranges (inclusive).
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
    pub windows: Vec<(usize, usize)>,
}

pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

pub fn probation(rows: usize) -> usize {
    ((rows as f64 * 0.15).floor() as usize).min(750)
}

/// The raw NAB score of detections (row indices, ascending) on one series.
pub fn score_series(rows: usize, windows: &[(usize, usize)], detections: &[usize], cost: CostMatrix) -> f64 {
    let probation = probation(rows);
    let mut score = 0.0;
    let mut detected = vec![false; windows.len()];
    for &i in detections {
        if i < probation {
            continue;
        }
        if let Some(w) = windows.iter().position(|&(a, b)| a <= i && i <= b) {
            if !detected[w] {
                detected[w] = true;
                let (a, b) = windows[w];
                let width = (b - a + 1) as f64;
                // NAB divides by the earliest detection's sigmoid: a perfect find is worth tp_weight.
                score += cost.tp_weight * scaled_sigmoid(-((b - i + 1) as f64) / width) / scaled_sigmoid(-1.0);
            }
            continue;
        }
        // A false positive: scaled by how far past the previous window it is.
        match windows.iter().rev().find(|&&(_, b)| b < i) {
            Some(&(a, b)) => {
                let width = (b - a + 1) as f64;
                let past = (i - b) as f64 / (width - 1.0).max(1.0);
                score += cost.fp_weight * scaled_sigmoid(past);
            }
            None => score -= cost.fp_weight,
        }
    }
    score - cost.fn_weight * detected.iter().filter(|d| !**d).count() as f64
}

/// The best score a detector can get on a series (every window found at its first row).
pub fn perfect_series(windows: &[(usize, usize)], cost: CostMatrix) -> f64 {
    windows.len() as f64 * cost.tp_weight
}

/// Anomaly scores (robust z) of every row, as the detector sees them, in order.
pub fn anomaly_scores(values: &[f64]) -> Vec<f64> {
    let mut raw = Vec::with_capacity(values.len());
    let mut hist: Vec<f64> = Vec::with_capacity(HISTORY);
    let mut diffs: Vec<f64> = Vec::with_capacity(HISTORY);
    for (i, &x) in values.iter().enumerate() {
        let d = if i > 0 { x - values[i - 1] } else { 0.0 };
        let z = |h: &[f64], v: f64| {
            if h.len() < 20 {
                return 0.0;
            }
            let (m, mad) = median_mad(h);
            // A flat history: any move is news, scaled by the series' magnitude.
            let spread = (1.4826 * mad).max(1e-6 * (1.0 + m.abs()));
            (v - m).abs() / spread
        };
        raw.push(z(&hist, x).max(z(&diffs, d)));
        if hist.len() == HISTORY {
            hist.remove(0);
            diffs.remove(0);
        }
        hist.push(x);
        diffs.push(d);
    }
    // How unusual the recent raw scores are against this series' own raw scores (a series
    // whose values are always jumpy must jump more): the short mean against the long mean
    // and spread, as HTM's anomaly likelihood does.
    let mut out = Vec::with_capacity(raw.len());
    let mut long = crate::detect::stats::Ewm::default();
    for i in 0..raw.len() {
        let short = raw[i.saturating_sub(SHORT - 1)..=i].iter().sum::<f64>() / (i.min(SHORT - 1) + 1) as f64;
        let sd = long.var.sqrt().max(1e-3);
        out.push(if long.n < 100 { 0.0 } else { (short - long.mean) / sd });
        long.update(raw[i].min(long.mean + 10.0 * sd), 1.0 / LONG as f64);
    }
    out
}

/// Rows averaged for the recent raw score, and the horizon of the long-run one.
pub const SHORT: usize = 5;
pub const LONG: usize = 2000;

/// Rows detected at `threshold`, with the refractory period.
pub fn detections(scores: &[f64], threshold: f64) -> Vec<usize> {
    let mut out = Vec::new();
    let mut quiet_until = 0;
    for (i, &s) in scores.iter().enumerate() {
        if i >= quiet_until && s >= threshold {
            out.push(i);
            quiet_until = i + REFRACTORY;
        }
    }
    out
}

/// Reads NAB's data and combined windows.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Series>> {
    let windows: BTreeMap<String, Vec<Vec<String>>> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("labels/combined_windows.json")).context("cannot read labels/combined_windows.json")?,
    )?;
    let mut out = Vec::new();
    for (name, ws) in windows {
        let path = dir.join("data").join(&name);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut stamps = Vec::new();
        let mut values = Vec::new();
        for (n, line) in text.lines().enumerate().skip(1) {
            let (t, v) = line
                .split_once(',')
                .with_context(|| format!("{}:{}: not `timestamp,value`", path.display(), n + 1))?;
            stamps.push(t.trim().to_owned());
            values.push(
                v.trim()
                    .parse::<f64>()
                    .with_context(|| format!("{}:{}: `{v}` is not a number", path.display(), n + 1))?,
            );
        }
        // Window bounds are timestamps with microseconds; rows are whole seconds.
        let row_of = |ts: &str| -> anyhow::Result<usize> {
            let key = ts.split('.').next().unwrap_or(ts);
            stamps
                .iter()
                .position(|s| s == key)
                .with_context(|| format!("{name}: window bound {ts} is not a row"))
        };
        let mut rows = Vec::new();
        for w in ws {
            anyhow::ensure!(w.len() == 2, "{name}: a window is not [start, end]");
            rows.push((row_of(&w[0])?, row_of(&w[1])?));
        }
        out.push(Series {
            name,
            values,
            windows: rows,
        });
    }
    Ok(out)
}

/// The series detectors NAB scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeriesDetector {
    /// The baseline's rule: robust z of value and change, anomaly likelihood, refractory.
    Baseline,
    /// The contextual sequence memory ([`ContextMemory`]).
    ContextMemory,
}

impl SeriesDetector {
    pub const ALL: [SeriesDetector; 2] = [SeriesDetector::Baseline, SeriesDetector::ContextMemory];

    /// Every row's anomaly score, as the detector emits them in order.
    pub fn scores(self, values: &[f64]) -> Vec<f64> {
        match self {
            SeriesDetector::Baseline => anomaly_scores(values),
            SeriesDetector::ContextMemory => {
                // NAB gives every detector the file's value range (HTM and CAD encode with it)
                // and its probation length.
                let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut memory = ContextMemory::new(low, high, probation(values.len()) / 5);
                values.iter().map(|&v| memory.score(v)).collect()
            }
        }
    }

    /// Rows detected at `threshold`.
    pub fn detections(self, scores: &[f64], threshold: f64) -> Vec<usize> {
        match self {
            SeriesDetector::Baseline => detections(scores, threshold),
            // The memory rests after an alert by itself: every row at the threshold counts.
            SeriesDetector::ContextMemory => (0..scores.len()).filter(|&i| scores[i] >= threshold).collect(),
        }
    }

    /// Thresholds the corpus-wide search tries.
    fn thresholds(self) -> Vec<f64> {
        match self {
            SeriesDetector::Baseline => std::iter::successors(Some(0.5), |t| Some(t * 1.05))
                .take_while(|&t| t <= 200.0)
                .collect(),
            SeriesDetector::ContextMemory => (1..=200).map(|i| f64::from(i) * 0.005).collect(),
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct NabResult {
    pub detector: SeriesDetector,
    pub profile: String,
    pub threshold: f64,
    pub score: f64,
    pub held_out_score: f64,
    pub files: usize,
    pub windows: usize,
    pub windows_detected: usize,
    pub false_positives: usize,
}

/// Scores a detector's output (`scores[i]` for `series[i]`) on every series for a profile.
///
/// `threshold` is NAB's: the one that scores best over the whole corpus. `held_out_score` is
/// the honest companion: files alternate between two halves, each half is scored at the
/// threshold that is best on the other, and the two are normalised together.
pub fn run(series: &[Series], scores: &[Vec<f64>], detector: SeriesDetector, profile: &str, cost: CostMatrix) -> NabResult {
    let raw_at = |t: f64, half: Option<usize>| -> f64 {
        series
            .iter()
            .zip(scores)
            .enumerate()
            .filter(|(i, _)| half.is_none_or(|h| i % 2 == h))
            .map(|(_, (s, sc))| score_series(s.values.len(), &s.windows, &detector.detections(sc, t), cost))
            .sum()
    };
    let best_on = |half: Option<usize>| -> f64 {
        let mut best = (f64::NEG_INFINITY, 0.0);
        for t in detector.thresholds() {
            let raw = raw_at(t, half);
            if raw > best.0 {
                best = (raw, t);
            }
        }
        best.1
    };
    let null: f64 = series.iter().map(|s| -cost.fn_weight * s.windows.len() as f64).sum();
    let perfect: f64 = series.iter().map(|s| perfect_series(&s.windows, cost)).sum();
    let normalise = |raw: f64| 100.0 * (raw - null) / (perfect - null);
    let threshold = best_on(None);
    let held_out = raw_at(best_on(Some(1)), Some(0)) + raw_at(best_on(Some(0)), Some(1));
    let (mut found, mut fps) = (0, 0);
    for (s, sc) in series.iter().zip(scores) {
        let p = probation(s.values.len());
        let d: Vec<usize> = detector.detections(sc, threshold).into_iter().filter(|&i| i >= p).collect();
        found += s.windows.iter().filter(|&&(a, b)| d.iter().any(|&i| a <= i && i <= b)).count();
        fps += d.iter().filter(|&&i| !s.windows.iter().any(|&(a, b)| a <= i && i <= b)).count();
    }
    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    NabResult {
        detector,
        profile: profile.to_owned(),
        threshold: (threshold * 1000.0).round() / 1000.0,
        score: round1(normalise(raw_at(threshold, None))),
        held_out_score: round1(normalise(held_out)),
        files: series.len(),
        windows: series.iter().map(|s| s.windows.len()).sum(),
        windows_detected: found,
        false_positives: fps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: CostMatrix = CostMatrix {
        tp_weight: 1.0,
        fn_weight: 1.0,
        fp_weight: 0.11,
    };

    #[test]
    fn the_sigmoid_rewards_early_detection_and_costs_late_ones() {
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-4);
        assert!(scaled_sigmoid(0.0).abs() < 1e-12);
        assert!(scaled_sigmoid(-0.5) > scaled_sigmoid(-0.1));
        assert!(scaled_sigmoid(0.5) < 0.0);
        assert_eq!(scaled_sigmoid(4.0), -1.0);
    }

    #[test]
    fn null_perfect_and_false_positives_score_as_nab_does() {
        let windows = [(2000, 2099), (5000, 5099)];
        let rows = 8000;
        assert_eq!(probation(rows), 750);
        assert_eq!(score_series(rows, &windows, &[], STANDARD), -2.0);
        let perfect = score_series(rows, &windows, &[2000, 5000], STANDARD);
        assert!((perfect - perfect_series(&windows, STANDARD)).abs() < 1e-12);
        // As in NAB's sweeper, a window found at its first row is worth exactly tp_weight.
        assert!((perfect - 2.0).abs() < 1e-12);
        // Only a window's first detection counts.
        assert_eq!(score_series(rows, &windows, &[2000, 2001, 5000], STANDARD), perfect);
        // A false positive before any window costs the full weight; in probation, nothing.
        assert!((score_series(rows, &windows, &[1000, 2000, 5000], STANDARD) - (perfect - 0.11)).abs() < 1e-12);
        assert_eq!(score_series(rows, &windows, &[100, 2000, 5000], STANDARD), perfect);
        // Right after a window it costs less than far after it.
        let near = score_series(rows, &windows, &[2000, 2101, 5000], STANDARD);
        let far = score_series(rows, &windows, &[2000, 4000, 5000], STANDARD);
        assert!(near > far && far < perfect);
    }

    #[test]
    fn the_held_out_score_uses_the_other_halfs_threshold() {
        // Four files; in each a jump at row 600 inside its window. The memory finds all four at
        // one threshold, so the held-out score equals the corpus score and both are high.
        let series: Vec<Series> = (0..4)
            .map(|k| {
                let mut values: Vec<f64> = (0..1000).map(|i| ((i + k) % 8) as f64).collect();
                values[600..].iter_mut().for_each(|v| *v = 7.0 - *v);
                Series {
                    name: format!("s{k}"),
                    values,
                    windows: vec![(590, 640)],
                }
            })
            .collect();
        let d = SeriesDetector::ContextMemory;
        let scores: Vec<Vec<f64>> = series.iter().map(|s| d.scores(&s.values)).collect();
        let r = run(&series, &scores, d, "standard", STANDARD);
        assert_eq!(r.windows_detected, 4);
        assert!(r.score > 70.0 && r.held_out_score == r.score, "{r:?}");
    }

    #[test]
    fn the_detector_fires_on_a_jump_and_then_stays_quiet() {
        let mut v: Vec<f64> = (0..1000).map(|i| 10.0 + (i as f64 * 0.7).sin()).collect();
        v[600] = 40.0;
        let s = anomaly_scores(&v);
        let d = detections(&s, 5.0);
        assert_eq!(d, vec![600]);
    }
}
