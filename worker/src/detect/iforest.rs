//! Isolation forest (Liu, Ting & Zhou 2008) on ndarray, following scikit-learn's
//! `IsolationForest` semantics: sub-samples of `max_samples` rows drawn without replacement, random
//! feature and uniform random threshold per node, depth limit `ceil(log2(max_samples))`, and the
//! anomaly score `2^(-E[h(x)] / c(max_samples))` (higher is more anomalous).
//!
//! Nodes are stored flat, children side by side, and each leaf stores its full path-length
//! contribution (`depth + c(leaf size)`), so scoring is a tight loop of compares.

use ndarray::{ArrayView1, ArrayView2, Axis};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Forest parameters.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug)]
pub struct ForestParams {
    pub n_trees: usize,
    pub max_samples: usize,
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams {
            n_trees: 100,
            max_samples: 256,
            seed: 0,
        }
    }
}

const LEAF: u32 = u32::MAX;
/// Trees walked together when scoring.
const LANES: usize = 4;
/// Trees walked before an early decision (see [`IsolationForest::exceeds`]).
pub const EARLY_TREES: usize = 8;

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug)]
struct Node {
    /// Split threshold, or for a leaf its path-length contribution.
    value: f64,
    /// Split feature, or [`LEAF`].
    feature: u32,
    /// Index of the left child; the right child follows it.
    left: u32,
}

/// A fitted isolation forest.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct IsolationForest {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    n_features: usize,
    norm: f64,
    compiled: Compiled,
}

/// Scoring layout: every tree as a complete binary tree of fixed depth, internal nodes in
/// breadth-first order (children of `i` at `2i+1`, `2i+2`), so a walk is `depth` branch-free
/// steps. A leaf above the bottom becomes "always go left" nodes down to a bottom slot holding
/// its value. Trees are walked [`LANES`] at a time so their independent loads overlap.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default)]
struct Compiled {
    depth: usize,
    /// (threshold, feature) side by side: one cache line per step, not two.
    splits: Vec<(f64, u32)>,
    leaves: Vec<f64>,
}

/// Average path length of an unsuccessful BST search among `n` points, c(n).
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

impl IsolationForest {
    /// Fits a forest on the rows of `data`.
    pub fn fit(data: ArrayView2<'_, f64>, params: ForestParams) -> Self {
        let n = data.nrows();
        let n_features = data.ncols();
        let psi = params.max_samples.min(n).max(1);
        let max_depth = (psi.max(2) as f64).log2().ceil() as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let mut forest = IsolationForest {
            nodes: Vec::with_capacity(params.n_trees * 2 * psi),
            roots: Vec::with_capacity(params.n_trees),
            n_features,
            norm: average_path_length(psi).max(1e-12),
            compiled: Compiled::default(),
        };
        let mut idx: Vec<usize> = Vec::with_capacity(psi);
        for _ in 0..params.n_trees {
            idx.clear();
            idx.extend(sample(&mut rng, n, psi));
            let root = forest.nodes.len() as u32;
            forest.nodes.push(Node {
                value: 0.0,
                feature: LEAF,
                left: 0,
            });
            forest.roots.push(root);
            forest.grow(data, &mut idx, root, 0, max_depth, &mut rng);
        }
        forest.compile(max_depth);
        forest
    }

    fn compile(&mut self, depth: usize) {
        let internal = (1usize << depth) - 1;
        let leaves = 1usize << depth;
        let mut c = Compiled {
            depth,
            splits: vec![(f64::INFINITY, 0); internal * self.roots.len()],
            leaves: vec![0.0; leaves * self.roots.len()],
        };
        for (t, &root) in self.roots.iter().enumerate() {
            self.place(&mut c, t, root as usize, 0, 0);
        }
        self.compiled = c;
    }

    fn place(&self, c: &mut Compiled, tree: usize, node: usize, pos: usize, level: usize) {
        let internal = (1usize << c.depth) - 1;
        let n = self.nodes[node];
        if level == c.depth {
            // Only leaves reach the bottom (depth is the growth limit).
            c.leaves[tree * (internal + 1) + pos - internal] = n.value;
            return;
        }
        let at = tree * internal + pos;
        if n.feature == LEAF {
            // Always left (threshold +inf); the value waits at the bottom of the left spine.
            c.splits[at] = (f64::INFINITY, 0);
            self.place(c, tree, node, 2 * pos + 1, level + 1);
        } else {
            c.splits[at] = (n.value, n.feature);
            self.place(c, tree, n.left as usize, 2 * pos + 1, level + 1);
            self.place(c, tree, n.left as usize + 1, 2 * pos + 2, level + 1);
        }
    }

    fn grow(&mut self, data: ArrayView2<'_, f64>, rows: &mut [usize], at: u32, depth: usize, max_depth: usize, rng: &mut ChaCha8Rng) {
        let leaf = |n: usize| depth as f64 + average_path_length(n);
        if depth >= max_depth || rows.len() <= 1 {
            self.nodes[at as usize] = Node {
                value: leaf(rows.len()),
                feature: LEAF,
                left: 0,
            };
            return;
        }
        // Pick a random feature that is not constant on this node (as scikit-learn's splitter does).
        let mut order: Vec<usize> = (0..self.n_features).collect();
        let mut split = None;
        for k in 0..self.n_features {
            let j = rng.gen_range(k..self.n_features);
            order.swap(k, j);
            let f = order[k];
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &r in rows.iter() {
                let v = data[[r, f]];
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if hi > lo {
                let t = rng.gen_range(lo..hi);
                split = Some((f, t));
                break;
            }
        }
        let Some((f, t)) = split else {
            self.nodes[at as usize] = Node {
                value: leaf(rows.len()),
                feature: LEAF,
                left: 0,
            };
            return;
        };
        // Partition rows: < t to the left.
        let mut i = 0;
        for j in 0..rows.len() {
            if data[[rows[j], f]] < t {
                rows.swap(i, j);
                i += 1;
            }
        }
        let left = self.nodes.len() as u32;
        self.nodes.push(Node {
            value: 0.0,
            feature: LEAF,
            left: 0,
        });
        self.nodes.push(Node {
            value: 0.0,
            feature: LEAF,
            left: 0,
        });
        self.nodes[at as usize] = Node {
            value: t,
            feature: f as u32,
            left,
        };
        let (l, r) = rows.split_at_mut(i);
        self.grow(data, l, left, depth + 1, max_depth, rng);
        self.grow(data, r, left + 1, depth + 1, max_depth, rng);
    }

    /// Mean path length of `x` over the trees (walking the compiled layout).
    pub fn path_length(&self, x: &[f64]) -> f64 {
        self.sum_path_lengths(x, 0, self.roots.len()) / self.roots.len().max(1) as f64
    }

    /// Sum of the path lengths of `x` in trees `from..to`.
    fn sum_path_lengths(&self, x: &[f64], from: usize, to: usize) -> f64 {
        debug_assert_eq!(x.len(), self.n_features);
        let c = &self.compiled;
        let internal = (1usize << c.depth) - 1;
        let full = from + (to - from) / LANES * LANES;
        let mut total = 0.0;
        for t in (from..full).step_by(LANES) {
            let splits = &c.splits[t * internal..(t + LANES) * internal];
            let mut pos = [0usize; LANES];
            for _ in 0..c.depth {
                for k in 0..LANES {
                    let (thr, f) = splits[k * internal + pos[k]];
                    pos[k] = 2 * pos[k] + 1 + usize::from(x[f as usize] >= thr);
                }
            }
            let leaves = &c.leaves[t * (internal + 1)..(t + LANES) * (internal + 1)];
            for (k, p) in pos.iter().enumerate() {
                total += leaves[k * (internal + 1) + p - internal];
            }
        }
        for t in full..to {
            let mut p = 0usize;
            for _ in 0..c.depth {
                let (thr, f) = c.splits[t * internal + p];
                p = 2 * p + 1 + usize::from(x[f as usize] >= thr);
            }
            total += c.leaves[t * (internal + 1) + p - internal];
        }
        total
    }

    /// Whether `x` scores above `threshold`, deciding early when the first trees already make
    /// it clear: if the mean path over the first [`EARLY_TREES`] trees exceeds the threshold's
    /// path length by `margin` (a few standard errors of that partial mean), the point is
    /// ordinary and the other trees are not walked. `margin` comes from
    /// [`IsolationForest::early_margin`]. Returns the decision and the score when it was computed.
    pub fn exceeds(&self, x: &[f64], threshold: f64, margin: f64) -> (bool, Option<f64>) {
        let n = self.roots.len();
        let limit = -self.norm * threshold.log2();
        if n > 2 * EARLY_TREES {
            let partial = self.sum_path_lengths(x, 0, EARLY_TREES);
            if partial / EARLY_TREES as f64 > limit + margin {
                return (false, None);
            }
            let rest = self.sum_path_lengths(x, EARLY_TREES, n);
            let s = 2f64.powf(-(partial + rest) / n as f64 / self.norm);
            return (s > threshold, Some(s));
        }
        let s = self.score(x);
        (s > threshold, Some(s))
    }

    /// The early-decision margin for [`IsolationForest::exceeds`]: `sigmas` standard errors of
    /// the mean path over [`EARLY_TREES`] trees, the per-tree spread measured on `rows`.
    pub fn early_margin(&self, rows: ArrayView2<'_, f64>, sigmas: f64) -> f64 {
        let n = self.roots.len();
        let mut var_sum = 0.0;
        let mut count = 0usize;
        let mut buf = vec![0.0; self.n_features];
        for row in rows.axis_iter(Axis(0)).take(1000) {
            for (b, v) in buf.iter_mut().zip(row.iter()) {
                *b = *v;
            }
            let lengths: Vec<f64> = (0..n).map(|t| self.sum_path_lengths(&buf, t, t + 1)).collect();
            let mean = lengths.iter().sum::<f64>() / n as f64;
            var_sum += lengths.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n as f64;
            count += 1;
        }
        let sd = (var_sum / count.max(1) as f64).sqrt();
        sigmas * sd / (EARLY_TREES as f64).sqrt()
    }

    /// The same by walking the node graph (kept as the reference the compiled layout is tested
    /// against).
    #[cfg(test)]
    fn path_length_reference(&self, x: &[f64]) -> f64 {
        let mut total = 0.0;
        for &root in &self.roots {
            let mut i = root as usize;
            loop {
                let n = self.nodes[i];
                if n.feature == LEAF {
                    total += n.value;
                    break;
                }
                i = n.left as usize + usize::from(x[n.feature as usize] >= n.value);
            }
        }
        total / self.roots.len().max(1) as f64
    }

    /// Anomaly score in (0, 1]; about 0.5 for ordinary points, near 1 for isolated ones.
    pub fn score(&self, x: &[f64]) -> f64 {
        2f64.powf(-self.path_length(x) / self.norm)
    }

    /// Scores each row.
    pub fn score_rows(&self, data: ArrayView2<'_, f64>) -> Vec<f64> {
        let mut buf = vec![0.0; self.n_features];
        data.axis_iter(Axis(0))
            .map(|row: ArrayView1<'_, f64>| {
                for (b, v) in buf.iter_mut().zip(row.iter()) {
                    *b = *v;
                }
                self.score(&buf)
            })
            .collect()
    }
}

/// ROC AUC of scores against binary labels (ties counted half), by the rank-sum formula.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum += avg;
            }
        }
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn c_matches_the_paper() {
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        assert!((average_path_length(256) - 10.2448).abs() < 1e-3);
    }

    #[test]
    fn outliers_score_higher_than_inliers() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let n = 2000;
        let mut data = Array2::<f64>::zeros((n + 20, 3));
        let mut labels = vec![false; n + 20];
        for i in 0..n + 20 {
            for j in 0..3 {
                data[[i, j]] = normal.sample(&mut rng);
            }
            if i >= n {
                data[[i, i % 3]] += 6.0;
                labels[i] = true;
            }
        }
        let f = IsolationForest::fit(
            data.view(),
            ForestParams {
                seed: 1,
                ..Default::default()
            },
        );
        let scores = f.score_rows(data.view());
        let auc = roc_auc(&scores, &labels);
        assert!(auc > 0.95, "auc {auc}");
        assert!(scores[n] > 0.6 && scores[0] < 0.6);
    }

    #[test]
    fn compiled_walk_equals_the_node_walk() {
        let data = Array2::from_shape_fn((500, 3), |(i, j)| ((i * 37 + j * 11) % 101) as f64 + (i % 7) as f64 * 0.1);
        for (trees, psi) in [(13, 256), (8, 16), (5, 3), (100, 500)] {
            let f = IsolationForest::fit(
                data.view(),
                ForestParams {
                    n_trees: trees,
                    max_samples: psi,
                    seed: 9,
                },
            );
            for i in (0..500).step_by(7) {
                let x: Vec<f64> = data.row(i).to_vec();
                assert!((f.path_length(&x) - f.path_length_reference(&x)).abs() < 1e-12);
            }
            let far = [1e6, -1e6, 0.5];
            assert!((f.path_length(&far) - f.path_length_reference(&far)).abs() < 1e-12);
        }
    }

    #[test]
    fn early_decisions_agree_with_full_scores() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let data = Array2::from_shape_fn((5000, 5), |_| normal.sample(&mut rng));
        let f = IsolationForest::fit(
            data.view(),
            ForestParams {
                n_trees: 32,
                max_samples: 256,
                seed: 4,
            },
        );
        let scores = f.score_rows(data.view());
        let threshold = crate::detect::stats::quantile(&scores, 0.99);
        let margin = f.early_margin(data.view(), 4.0);
        let mut disagree = 0;
        let mut early = 0;
        for (i, row) in data.outer_iter().enumerate() {
            let (above, s) = f.exceeds(row.as_slice().unwrap(), threshold, margin);
            early += usize::from(s.is_none());
            disagree += usize::from(above != (scores[i] > threshold));
        }
        assert!(early > 2500, "most ordinary points are decided early ({early})");
        assert!(disagree <= 5, "{disagree} of 5000 decided differently");
    }

    #[test]
    fn same_seed_same_forest() {
        let data = Array2::from_shape_fn((300, 2), |(i, j)| ((i * 31 + j * 17) % 97) as f64);
        let p = ForestParams {
            n_trees: 10,
            max_samples: 64,
            seed: 3,
        };
        let a = IsolationForest::fit(data.view(), p).score_rows(data.view());
        let b = IsolationForest::fit(data.view(), p).score_rows(data.view());
        assert_eq!(a, b);
    }

    #[test]
    fn constant_data_does_not_loop() {
        let data = Array2::<f64>::ones((50, 4));
        let f = IsolationForest::fit(
            data.view(),
            ForestParams {
                n_trees: 5,
                max_samples: 32,
                seed: 0,
            },
        );
        let s = f.score(&[1.0; 4]);
        assert!(s.is_finite() && s > 0.0);
    }

    #[test]
    fn auc_known_values() {
        assert_eq!(roc_auc(&[0.1, 0.2, 0.3, 0.4], &[false, false, true, true]), 1.0);
        assert_eq!(roc_auc(&[0.4, 0.3, 0.2, 0.1], &[false, false, true, true]), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), 0.5);
    }
}
