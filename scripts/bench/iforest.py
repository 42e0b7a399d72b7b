#!/usr/bin/env python3
"""Isolation forest: apiwatch's Rust implementation beside scikit-learn's, in one run.

For every ODDS table in ../shared/benchmarks/odds and a synthetic table of --synthetic-rows
rows, both fit on all rows and score all rows (the unsupervised setting) with the same
n_estimators and max_samples, averaged over --repeats seeds. Prints ROC AUC, fit and score
times, and the speed ratios as a Markdown table. Needs numpy, scipy, scikit-learn
(scripts/bench/requirements.txt) and a release build of apiwatch.

    python3 scripts/bench/iforest.py [--synthetic-rows 1000000]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.io
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent.parent
ODDS = ROOT.parent / "shared" / "benchmarks" / "odds"
CACHE = ROOT / ".cache" / "iforest"
BIN = ROOT / "target" / "release" / "apiwatch"


def tables(synthetic_rows: int):
    for mat in sorted(ODDS.glob("*.mat")):
        d = scipy.io.loadmat(mat)
        yield mat.stem, np.asarray(d["X"], dtype=float), np.asarray(d["y"]).ravel().astype(int)
    for csv in sorted(ODDS.glob("*.csv")):
        if csv.name.startswith("pyod_"):
            continue
        a = np.loadtxt(csv, delimiter=",")
        yield csv.stem, a[:, :-1], a[:, -1].astype(int)
    rng = np.random.default_rng(7)
    n, d = synthetic_rows, 8
    x = rng.normal(size=(n, d))
    y = np.zeros(n, dtype=int)
    k = n // 100
    x[:k] += rng.choice([-1, 1], size=(k, d)) * rng.uniform(2.5, 5.0, size=(k, d)) * (rng.random((k, d)) < 0.4)
    y[:k] = 1
    yield f"synthetic-{n}", x, y


def sklearn_run(x, y, trees, samples, repeats):
    auc = fit_s = score_s = 0.0
    for r in range(repeats):
        f = IsolationForest(n_estimators=trees, max_samples=samples, random_state=r)
        t = time.perf_counter()
        f.fit(x)
        fit_s += time.perf_counter() - t
        t = time.perf_counter()
        s = -f.score_samples(x)
        score_s += time.perf_counter() - t
        auc += roc_auc_score(y, s)
    return auc / repeats, fit_s / repeats, score_s / repeats


def apiwatch_run(name, x, y, trees, samples, repeats):
    CACHE.mkdir(parents=True, exist_ok=True)
    csv = CACHE / f"{name}.csv"
    if not csv.exists():
        np.savetxt(csv, np.column_stack([x, y]), delimiter=",", fmt="%.10g")
    out = subprocess.run(
        [str(BIN), "forest", "--csv", str(csv), "--trees", str(trees), "--samples", str(samples), "--repeats", str(repeats)],
        check=True, capture_output=True, text=True,
    )
    r = json.loads(out.stdout)
    return r["auc"], r["fit_s"], r["score_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--synthetic-rows", type=int, default=1_000_000)
    a = ap.parse_args()
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: run `cargo build --release` first")
    # One core for both sides: the comparison is per core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"n_estimators={a.trees}, max_samples={a.samples}, mean of {a.repeats} seeds; fit and score on all rows; one thread each\n")
    print("| table | rows x dims | AUC sklearn | AUC apiwatch | diff | fit ms sklearn / apiwatch | score ms sklearn / apiwatch | speed-up fit / score |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for name, x, y in tables(a.synthetic_rows):
        reps = 1 if len(x) > 100_000 else a.repeats
        s_auc, s_fit, s_score = sklearn_run(x, y, a.trees, a.samples, reps)
        r_auc, r_fit, r_score = apiwatch_run(name, x, y, a.trees, a.samples, reps)
        worst = max(worst, s_auc - r_auc)
        print(
            f"| {name} | {x.shape[0]} x {x.shape[1]} | {s_auc:.3f} | {r_auc:.3f} | {r_auc - s_auc:+.3f} | "
            f"{s_fit * 1e3:.1f} / {r_fit * 1e3:.1f} | {s_score * 1e3:.1f} / {r_score * 1e3:.1f} | "
            f"{s_fit / max(r_fit, 1e-9):.0f}x / {s_score / max(r_score, 1e-9):.1f}x |",
            flush=True,
        )
    print(f"\nlargest AUC shortfall against scikit-learn: {max(worst, 0):.3f}")


if __name__ == "__main__":
    main()
