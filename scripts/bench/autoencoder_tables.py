#!/usr/bin/env python3
"""The AutoEncoder (apiwatch's trainer, exported to ONNX, scored by onnxruntime: the same file
the worker runs through `ort`) and apiwatch's isolation forest on labelled outlier tables and on
Train-Ticket traces, against the published figures in ../shared/benchmarks/README.md.

Protocol (pyod's): each table is split 60/40 at random (5 seeds); the models fit on the 60%
(outliers included, labels unused) and score the 40%; ROC AUC on the 40%. Train-Ticket: the
models fit on 60% of the normal traces and score the other 40% with all abnormal traces; ROC
AUC, and F1 at the AutoEncoder card's threshold (the 0.995 quantile of held-out normal rows, no
labels used) and at the best threshold (an upper bound, as TraceAnomaly/TraceVAE report).
Latencies enter as log(1 + ms). Needs numpy, scipy, scikit-learn (metrics only), onnx,
onnxruntime, and a release build of apiwatch:

    python3 scripts/bench/autoencoder_tables.py
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import scipy.io
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "train"))
import nets  # noqa: E402
import train  # noqa: E402

BENCH = ROOT.parent / "shared" / "benchmarks"
BIN = ROOT / "target" / "release" / "apiwatch"


def fit_autoencoder(x, seed, epochs):
    """Trains as `train.py autoencoder` does and returns the ONNX path and the card threshold."""
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = max(len(x) // 10, 1)
    val, tr = x[order[:n_val]], x[order[n_val:]]
    mean, std = tr.mean(0), np.maximum(tr.std(0), 1e-3)
    xs = (tr - mean) / std
    hidden = int(min(64, max(8, d // 2)))
    code = int(min(16, max(2, d // 4)))
    p = nets.ae_init(d, hidden, code, rng)
    opt = nets.Adam(p, lr=3e-3)
    for _ in range(epochs):
        perm = rng.permutation(len(xs))
        for s in range(0, len(xs), 128):
            _, g = nets.ae_loss_grad(p, xs[perm[s:s + 128]])
            opt.step(p, g)
    model = train.ae_export(p, mean, std, [f"f{j}" for j in range(d)])
    path = tempfile.mktemp(suffix=".onnx")
    onnx.save(model, path)
    val_scores = train.run_onnx(path, {"features": train.f32(val)})["score"]
    return path, float(np.quantile(val_scores, 0.995))


def ae_scores(path, x):
    return train.run_onnx(path, {"features": train.f32(x)})["score"].astype(float)


def forest_scores(train_x, test_x, seed):
    """apiwatch's isolation forest: fit on train rows, score test rows (`apiwatch forest`)."""
    with tempfile.TemporaryDirectory() as d:
        a, b = Path(d) / "train.csv", Path(d) / "test.csv"
        np.savetxt(a, train_x, delimiter=",")
        np.savetxt(b, test_x, delimiter=",")
        out = subprocess.run([str(BIN), "forest", "--fit-csv", str(a), "--score-csv", str(b), "--seed", str(seed)],
                             check=True, capture_output=True, text=True).stdout
        return np.array(json.loads(out)["scores"])


def tables():
    for mat in sorted((BENCH / "odds").glob("*.mat")):
        m = scipy.io.loadmat(mat)
        yield mat.stem, np.asarray(m["X"], float), np.asarray(m["y"]).ravel().astype(int)


def published():
    rows = {}
    with open(BENCH / "odds" / "pyod_docs_tables_roc.csv") as f:
        head = f.readline().strip().split(",")
        for line in f:
            v = line.strip().split(",")
            rows[v[0]] = dict(zip(head, v))
    return rows


def odds(seeds, epochs):
    pub = published()
    print("| table | rows x dims | AutoEncoder ROC AUC | apiwatch isolation forest | published: pyod IForest / PCA / OCSVM |")
    print("|---|---|---|---|---|")
    for name, x, y in tables():
        ae, fo = [], []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            o = rng.permutation(len(x))
            cut = int(len(x) * 0.6)
            tr, te = o[:cut], o[cut:]
            path, _ = fit_autoencoder(x[tr], seed, epochs)
            ae.append(roc_auc_score(y[te], ae_scores(path, x[te])))
            os.unlink(path)
            fo.append(roc_auc_score(y[te], forest_scores(x[tr], x[te], seed)))
        p = pub.get(name, {})
        print(f"| {name} | {x.shape[0]} x {x.shape[1]} | {np.mean(ae):.3f} ± {np.std(ae):.3f} | {np.mean(fo):.3f} ± {np.std(fo):.3f} | "
              f"{p.get('IForest', '-')} / {p.get('PCA', '-')} / {p.get('OCSVM', '-')} |")
        sys.stdout.flush()


def read_traces(name):
    with zipfile.ZipFile(BENCH / "traces" / f"{name}.zip") as z:
        text = z.read(z.namelist()[0]).decode()
    rows = [line.split(":", 1)[1] for line in text.splitlines() if ":" in line]
    return np.log1p(np.array([[float(v) for v in r.split(",")] for r in rows]))


def traces(seed, epochs):
    normal, abnormal = read_traces("test_normal"), read_traces("test_abnormal")
    rng = np.random.default_rng(seed)
    o = rng.permutation(len(normal))
    cut = int(len(normal) * 0.6)
    tr = normal[o[:cut]]
    te = np.vstack([normal[o[cut:]], abnormal])
    y = np.r_[np.zeros(len(normal) - cut), np.ones(len(abnormal))]
    path, threshold = fit_autoencoder(tr, seed, epochs)
    s = ae_scores(path, te)
    os.unlink(path)
    prec, rec, _ = precision_recall_curve(y, s)
    best = float(np.max(2 * prec * rec / np.maximum(prec + rec, 1e-12)))
    f = forest_scores(tr, te, seed)
    fp, fr, _ = precision_recall_curve(y, f)
    print()
    print(f"Train-Ticket traces: fit on {len(tr)} normal, test {len(te) - len(abnormal)} normal + {len(abnormal)} abnormal, {normal.shape[1]} call paths")
    print("| model | ROC AUC | F1 at the card threshold (no labels) | best F1 (labels pick the threshold) |")
    print("|---|---|---|---|")
    print(f"| AutoEncoder | {roc_auc_score(y, s):.3f} | {f1_score(y, s > threshold):.3f} | {best:.3f} |")
    print(f"| apiwatch isolation forest | {roc_auc_score(y, f):.3f} | - | {float(np.max(2 * fp * fr / np.maximum(fp + fr, 1e-12))):.3f} |")
    print("| published: TraceAnomaly / TraceVAE | - | - | 0.626 / 0.973 |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--trace-epochs", type=int, default=15)
    ap.add_argument("--skip-traces", action="store_true")
    a = ap.parse_args()
    odds([int(s) for s in a.seeds.split(",")], a.epochs)
    if not a.skip_traces:
        traces(1, a.trace_epochs)


if __name__ == "__main__":
    main()
