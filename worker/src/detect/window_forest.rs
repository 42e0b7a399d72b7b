//! Per-window isolation forest. Each service window becomes a vector of its deviations from its
//! own recent medians (calls, error rates, p95 latency, response size); one forest over all
//! services learns what ordinary windows look like, and a window more isolated than anything in
//! its training set is reported, with the features that set it apart. It complements the
//! per-metric baselines by seeing combinations (a little slower and a little more errors at once).

use ndarray::Array2;
use rustc_hash::FxHashMap;

use super::iforest::{ForestParams, IsolationForest};
use super::stats::{column_mean_std, median, Ring};
use super::{entity_label, Detector, Evicted, Finding, WindowContext};
use crate::model::anomaly::{Anomaly, AnomalyKind, Contributor, Weight};
use crate::model::time::{Millis, HOUR_MS};
use crate::model::{EntityKind, WindowStat};

const FEATURES: [&str; 5] = [
    "calls_vs_usual",
    "errors_5xx_rate",
    "errors_4xx_rate",
    "p95_vs_usual",
    "response_bytes_vs_usual",
];
const NF: usize = FEATURES.len();
const MIN_TRAIN: usize = 600;
const MAX_TRAIN: usize = 20_000;
const REFIT_EVERY: Millis = 6 * HOUR_MS;

#[derive(serde::Serialize, serde::Deserialize)]
struct History {
    count: Ring,
    p95: Ring,
    resp: Ring,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Fitted {
    forest: IsolationForest,
    threshold: f64,
    std: [f64; NF],
    at: Millis,
}

/// Pseudo-calls with no error added to every window's error rate: one failure in a dozen
/// calls is not an 8% error rate worth isolating, thirty in a hundred still is.
const RATE_PRIOR_CALLS: f64 = 20.0;

/// An error rate shrunk towards zero for small windows.
fn shrunk_rate(errors: u64, calls: u64) -> f64 {
    errors as f64 / (calls as f64 + RATE_PRIOR_CALLS)
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct WindowForestDetector {
    seed: u64,
    history: FxHashMap<u32, History>,
    train: Vec<[f64; NF]>,
    fitted: Option<Fitted>,
}

impl WindowForestDetector {
    pub fn new(seed: u64) -> Self {
        WindowForestDetector {
            seed,
            history: FxHashMap::default(),
            train: Vec::new(),
            fitted: None,
        }
    }

    fn features(&mut self, st: &WindowStat) -> Option<[f64; NF]> {
        let h = self.history.entry(st.entity).or_insert_with(|| History {
            count: Ring::new(30),
            p95: Ring::new(30),
            resp: Ring::new(30),
        });
        let ready = h.count.len() >= 10 && st.count >= 10;
        let x = ready.then(|| {
            [
                ((st.count as f64 + 1.0) / (median(h.count.values()) + 1.0)).ln(),
                shrunk_rate(st.errors_5xx, st.count),
                shrunk_rate(st.errors_4xx, st.count),
                (st.p95_ms.max(1e-3) / median(h.p95.values()).max(1e-3)).ln(),
                ((st.mean_response_bytes + 1.0) / (median(h.resp.values()) + 1.0)).ln(),
            ]
        });
        h.count.push(st.count as f64);
        if st.count >= 10 {
            h.p95.push(st.p95_ms);
            h.resp.push(st.mean_response_bytes);
        }
        x
    }

    fn fit(&mut self, now: Millis) {
        let n = self.train.len();
        let data = Array2::from_shape_fn((n, NF), |(i, j)| self.train[i][j]);
        let forest = IsolationForest::fit(
            data.view(),
            ForestParams {
                n_trees: 100,
                max_samples: 256,
                seed: self.seed,
            },
        );
        let scores = forest.score_rows(data.view());
        let threshold = scores.iter().copied().fold(0.0, f64::max);
        let (_, std) = column_mean_std(&self.train, 0.01);
        self.fitted = Some(Fitted {
            forest,
            threshold,
            std,
            at: now,
        });
        self.train.clear();
    }
}

impl Detector for WindowForestDetector {
    fn name(&self) -> &'static str {
        "isolation_forest.window"
    }

    fn forget(&mut self, evicted: &Evicted) {
        self.history.retain(|id, _| !evicted.id(*id));
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        if !w.complete {
            return;
        }
        for st in w.stats.iter().filter(|s| s.key.kind() == EntityKind::Service) {
            let Some(x) = self.features(st) else { continue };
            let mut flagged = false;
            if let Some(f) = &self.fitted {
                let s = f.forest.score(&x);
                if s > f.threshold {
                    flagged = true;
                    let excess: Vec<f64> = (0..NF).map(|j| (x[j] / f.std[j]).abs()).collect();
                    let total: f64 = excess.iter().sum::<f64>().max(1e-9);
                    let mut order: Vec<usize> = (0..NF).collect();
                    order.sort_by(|&a, &b| excess[b].total_cmp(&excess[a]));
                    let kind = match order[0] {
                        0 => AnomalyKind::Traffic,
                        1 | 2 => AnomalyKind::Errors,
                        3 => AnomalyKind::Latency,
                        _ => AnomalyKind::Request,
                    };
                    let mut fd = Finding::new(kind, "isolation_forest", st.key, (w.start, w.end));
                    // Scored on how far past the most isolated training window it lies.
                    fd.score = (30.0 + 400.0 * (s - f.threshold)).clamp(30.0, 70.0);
                    fd.metric = "window.isolation";
                    fd.weight = Weight::Corroborates;
                    fd.actual = Some(s);
                    fd.expected = Some(f.threshold);
                    fd.reason = format!(
                        "the window of {} is more isolated than any ordinary window seen (score {:.2} against {:.2}), mostly for {} and {}",
                        entity_label(w.names, &st.key),
                        s,
                        f.threshold,
                        FEATURES[order[0]].replace('_', " "),
                        FEATURES[order[1]].replace('_', " ")
                    );
                    fd.contributors = order
                        .iter()
                        .take(3)
                        .map(|&j| Contributor {
                            name: FEATURES[j].to_owned(),
                            share: super::round3(excess[j] / total),
                            actual: Some(super::round3(x[j])),
                            expected: None,
                        })
                        .collect();
                    fd.impact_calls = st.count;
                    fd.impact_users = st.users;
                    fd.trace_ids = st.example_traces.clone();
                    out.push(fd.into_anomaly(w.names));
                }
            }
            if !flagged && self.train.len() < MAX_TRAIN {
                self.train.push(x);
            }
        }
        let due = match &self.fitted {
            None => self.train.len() >= MIN_TRAIN,
            Some(f) => w.end - f.at >= REFIT_EVERY && self.train.len() >= MIN_TRAIN,
        };
        if due {
            self.fit(w.end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_windows_do_not_make_large_rates() {
        assert!(shrunk_rate(1, 12) < 0.04);
        assert!(shrunk_rate(30, 100) > 0.24);
        assert_eq!(shrunk_rate(0, 0), 0.0);
    }
}
