#!/usr/bin/env python3
"""Trains apiwatch's models and exports them to ONNX with a model card.

    train.py autoencoder --features requests.csv --out DIR
    train.py lstm --sessions sessions.txt --out DIR

Training data comes from the worker (`apiwatch features`), so this file never re-implements
the features. Each export writes DIR/model.onnx, DIR/card.json (inputs, outputs, feature order,
scaling, vocabulary, thresholds calibrated on held-out normal data, training-data hash and size,
validation metrics) and DIR/fixtures.json (inputs and onnxruntime's outputs, which the Rust
contract test replays through `ort`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import nets

OPSET = 17


def progress(label: str, done: int, total: int, extra: str = ""):
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {extra}   ")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def f32(a):
    return np.asarray(a, dtype=np.float32)


def save(out: str, model: onnx.ModelProto, card: dict, fixtures: dict):
    os.makedirs(out, exist_ok=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(out, "model.onnx"))
    card["model_bytes"] = os.path.getsize(os.path.join(out, "model.onnx"))
    card["model_sha256"] = sha256_file(os.path.join(out, "model.onnx"))
    with open(os.path.join(out, "card.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "fixtures.json"), "w") as f:
        json.dump(fixtures, f)
        f.write("\n")


def run_onnx(path: str, feeds: dict) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, feeds)))


def io_spec(model: onnx.ModelProto) -> tuple[list, list]:
    def spec(v):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        dtype = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64"}[v.type.tensor_type.elem_type]
        return {"name": v.name, "shape": dims, "dtype": dtype}

    return [spec(i) for i in model.graph.input], [spec(o) for o in model.graph.output]


# --- AutoEncoder ------------------------------------------------------------------------------


def load_features(path: str):
    with open(path) as f:
        header = f.readline().strip().split(",")
    x = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if x.shape[0] == 0:
        sys.exit(f"{path}: no rows")
    if x.shape[1] != len(header):
        sys.exit(f"{path}: {x.shape[1]} columns but the header names {len(header)}")
    if not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        sys.exit(f"{path}: line {bad + 2} holds a value that is not a finite number")
    return header, x


def ae_export(p: dict, mean, std, features: list) -> onnx.ModelProto:
    d = len(features)
    inits = [numpy_helper.from_array(f32(mean), "mean"), numpy_helper.from_array(f32(std), "std")]
    for k, v in p.items():
        inits.append(numpy_helper.from_array(f32(v), k))
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("Gemm", ["scaled", "W1", "b1"], ["a1"]),
        helper.make_node("Tanh", ["a1"], ["h1"]),
        helper.make_node("Gemm", ["h1", "W2", "b2"], ["code"]),
        helper.make_node("Gemm", ["code", "W3", "b3"], ["a2"]),
        helper.make_node("Tanh", ["a2"], ["h2"]),
        helper.make_node("Gemm", ["h2", "W4", "b4"], ["reconstruction"]),
        helper.make_node("Sub", ["scaled", "reconstruction"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["feature_errors"]),
        helper.make_node("ReduceMean", ["feature_errors"], ["score"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "apiwatch_autoencoder",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", d])],
        [
            helper.make_tensor_value_info("feature_errors", TensorProto.FLOAT, ["batch", d]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
        ],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="apiwatch-train")
    m.ir_version = 8
    return m


def train_autoencoder(args):
    features, x = load_features(args.features)
    rng = np.random.default_rng(args.seed)
    total_rows = len(x)
    if args.max_rows and len(x) > args.max_rows:
        x = x[np.sort(rng.choice(len(x), size=args.max_rows, replace=False))]
    order = rng.permutation(len(x))
    n_val = max(int(len(x) * args.holdout), 1)
    val, train = x[order[:n_val]], x[order[n_val:]]
    mean = train.mean(0)
    std = np.maximum(train.std(0), 1e-3)
    xs, vs = (train - mean) / std, (val - mean) / std
    p = nets.ae_init(len(features), args.hidden, args.code, rng)
    opt = nets.Adam(p, lr=args.lr)
    steps = 0
    t0 = time.time()
    for epoch in range(args.epochs):
        perm = rng.permutation(len(xs))
        for s in range(0, len(xs), args.batch):
            _, g = nets.ae_loss_grad(p, xs[perm[s:s + args.batch]])
            opt.step(p, g)
            steps += 1
        r, _ = nets.ae_forward(p, vs)
        progress("autoencoder", epoch + 1, args.epochs, f"val mse {((r - vs) ** 2).mean():.4f}")
    model = ae_export(p, mean, std, features)
    tmp = os.path.join(args.out, "model.onnx")
    os.makedirs(args.out, exist_ok=True)
    onnx.save(model, tmp)
    val_out = run_onnx(tmp, {"features": f32(val)})
    scores = val_out["score"].astype(np.float64)
    q = args.quantile
    threshold = float(np.quantile(scores, q))
    inputs, outputs = io_spec(model)
    card = {
        "name": "autoencoder",
        "kind": "autoencoder",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "outputs": outputs,
        "features": features,
        "scaling": {"mean": [float(v) for v in mean], "std": [float(v) for v in std], "note": "applied inside the graph"},
        "architecture": f"{len(features)}-{args.hidden}-{args.code}-{args.hidden}-{len(features)}, tanh, trained with Adam on MSE",
        "threshold": threshold,
        "threshold_rule": f"score above the {q} quantile of held-out normal rows",
        "feature_error_mean": [float(v) for v in val_out["feature_errors"].mean(0)],
        "training": {
            "source": os.path.basename(args.features),
            "sha256": sha256_file(args.features),
            "rows": int(len(train)),
            "rows_in_source": int(total_rows),
            "holdout_rows": int(len(val)),
            "epochs": args.epochs,
            "steps": steps,
            "seconds": round(time.time() - t0, 1),
            "seed": args.seed,
        },
        "validation": {
            "mse": float(scores.mean()),
            "score_p50": float(np.quantile(scores, 0.5)),
            "score_p99": float(np.quantile(scores, 0.99)),
            "score_p999": float(np.quantile(scores, 0.999)),
        },
    }
    # Fixtures: held-out rows plus rows pushed far from normal, one feature at a time.
    fx = val[:6].copy()
    for j in range(min(len(features), 6)):
        row = val[j % len(val)].copy()
        row[j] += 8 * std[j]
        fx = np.vstack([fx, row])
    out = run_onnx(tmp, {"features": f32(fx)})
    fixtures = {
        "inputs": {"features": {"shape": list(fx.shape), "data": f32(fx).ravel().tolist()}},
        "outputs": {k: {"shape": list(v.shape), "data": v.ravel().tolist()} for k, v in out.items()},
    }
    save(args.out, model, card, fixtures)
    print(json.dumps({"model": args.out, "threshold": threshold, "val_mse": card["validation"]["mse"]}))


# --- LSTM -------------------------------------------------------------------------------------

START, UNKNOWN, END = "<start>", "<unknown>", "<end>"


def load_sessions(path: str) -> list[list[str]]:
    out = []
    with open(path) as f:
        for line in f:
            toks = line.split()
            if toks:
                out.append(toks)
    if not out:
        sys.exit(f"{path}: no sessions")
    return out


def encode(sessions, index):
    unk = index[UNKNOWN]
    return [[index.get(t, unk) for t in s] for s in sessions]


def batches(encoded, batch, max_len, rng):
    """Padded (inputs, targets, mask) batches of similar lengths. Inputs start with <start>."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), rng.random()))
    groups = [order[s:s + batch] for s in range(0, len(order), batch)]
    rng.shuffle(groups)
    for g in groups:
        seqs = [encoded[i][:max_len] for i in g]
        T = max(len(s) for s in seqs)
        inp = np.zeros((len(seqs), T), dtype=np.int64)
        tgt = np.zeros((len(seqs), T), dtype=np.int64)
        mask = np.zeros((len(seqs), T))
        for r, s in enumerate(seqs):
            inp[r, 1:len(s)] = s[:-1]
            tgt[r, :len(s)] = s
            mask[r, :len(s)] = 1.0
        yield inp, tgt, mask


def lstm_export(p: dict, vocab_size: int) -> onnx.ModelProto:
    L = nets.lstm_layers(p)
    H = p["R0"].shape[1]
    inits = [numpy_helper.from_array(f32(p["E"]), "embedding"), numpy_helper.from_array(f32(p["Wo"]), "Wo"),
             numpy_helper.from_array(f32(p["bo"]), "bo"), numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0")]
    nodes = [helper.make_node("Gather", ["embedding", "token"], ["emb"]),
             helper.make_node("Unsqueeze", ["emb", "axis0"], ["x0"])]
    hs, cs = [], []
    x = "x0"
    for l in range(L):
        inits += [
            numpy_helper.from_array(f32(p[f"W{l}"])[None], f"W{l}"),
            numpy_helper.from_array(f32(p[f"R{l}"])[None], f"R{l}"),
            numpy_helper.from_array(f32(np.concatenate([p[f"b{l}"], np.zeros(4 * H)]))[None], f"B{l}"),
            numpy_helper.from_array(np.array([l], dtype=np.int64), f"s{l}"),
            numpy_helper.from_array(np.array([l + 1], dtype=np.int64), f"e{l}"),
        ]
        nodes += [
            helper.make_node("Slice", ["h_in", f"s{l}", f"e{l}", "axis0"], [f"h0_{l}"]),
            helper.make_node("Slice", ["c_in", f"s{l}", f"e{l}", "axis0"], [f"c0_{l}"]),
            helper.make_node("LSTM", [x, f"W{l}", f"R{l}", f"B{l}", "", f"h0_{l}", f"c0_{l}"], [f"y{l}", f"yh{l}", f"yc{l}"], hidden_size=H),
        ]
        hs.append(f"yh{l}")
        cs.append(f"yc{l}")
        x = f"yh{l}"  # [1, b, H]: the next layer's one-step input
    nodes += [
        helper.make_node("Concat", hs, ["h_out"], axis=0),
        helper.make_node("Concat", cs, ["c_out"], axis=0),
        helper.make_node("Squeeze", [x, "axis0"], ["top"]),
        helper.make_node("Gemm", ["top", "Wo", "bo"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "apiwatch_lstm_step",
        [
            helper.make_tensor_value_info("token", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [L, "batch", H]),
            helper.make_tensor_value_info("c_in", TensorProto.FLOAT, [L, "batch", H]),
        ],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", vocab_size]),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [L, "batch", H]),
            helper.make_tensor_value_info("c_out", TensorProto.FLOAT, [L, "batch", H]),
        ],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="apiwatch-train")
    m.ir_version = 8
    return m


def next_call_ranks(p: dict, encoded, batch=256):
    """For every call of every session: (session index, probability of the actual call, its rank
    among the model's predictions, 0 = most likely)."""
    out = []
    for s0 in range(0, len(encoded), batch):
        seqs = encoded[s0:s0 + batch]
        T = max(len(s) for s in seqs)
        inp = np.zeros((len(seqs), T), dtype=np.int64)
        for r, s in enumerate(seqs):
            inp[r, 1:len(s)] = s[:-1]
        probs = nets.lstm_sequence_probs(p, inp)
        for r, s in enumerate(seqs):
            for t, tok in enumerate(s):
                pr = probs[r, t]
                out.append((s0 + r, float(pr[tok]), int((pr > pr[tok]).sum())))
    return out


def calibrate_top_k(ranks, n_sessions, vocab, unknown_id, encoded, level: str, target: float):
    """Smallest k whose false-positive rate on held-out normal data is at most `target`, per call
    or per session. Calls to unknown tokens are not judged (the online model covers them)."""
    judged = [(si, rk) for (si, _, rk), tok in zip(ranks, (t for s in encoded for t in s)) if tok != unknown_id]
    for k in range(1, vocab + 1):
        if level == "call":
            fp = sum(1 for _, rk in judged if rk >= k) / max(len(judged), 1)
        else:
            fp = len({si for si, rk in judged if rk >= k}) / max(n_sessions, 1)
        if fp <= target:
            return k, fp
    return vocab, 0.0


def train_lstm(args):
    sessions = load_sessions(args.sessions)
    rng = np.random.default_rng(args.seed)
    total_sessions = len(sessions)
    if args.max_sessions and len(sessions) > args.max_sessions:
        # Sessions repeat a few flows many times: a uniform sample keeps them all, in proportion.
        keep = rng.choice(len(sessions), size=args.max_sessions, replace=False)
        sessions = [sessions[i] for i in sorted(keep)]
    order = rng.permutation(len(sessions))
    n_hold = int(len(sessions) * args.holdout)
    n_cal = max(int(len(sessions) * args.calibration), 1)
    hold = [sessions[i] for i in order[:n_hold]]
    cal = [sessions[i] for i in order[n_hold:n_hold + n_cal]]
    train = [sessions[i] for i in order[n_hold + n_cal:]]
    if args.holdout_out:
        with open(args.holdout_out, "w") as f:
            for s in hold:
                f.write(" ".join(s) + "\n")
    counts: dict[str, int] = {}
    for s in train:
        for t in s:
            counts[t] = counts.get(t, 0) + 1
    tokens = sorted((t for t, c in counts.items() if c >= args.min_count), key=lambda t: (-counts[t], t))
    vocab = [START, UNKNOWN] + ([END] if args.end_token else []) + tokens
    index = {t: i for i, t in enumerate(vocab)}
    enc_train, enc_cal = encode(train, index), encode(cal, index)
    if args.end_token:
        # The model also learns where sessions end, so a session cut short is a deviation too.
        enc_train = [s + [index[END]] for s in enc_train]
        enc_cal = [s + [index[END]] for s in enc_cal]
    p = nets.lstm_init(len(vocab), args.embed, args.hidden, args.layers, rng)
    opt = nets.Adam(p, lr=args.lr)
    t0 = time.time()
    n_batches = (len(enc_train) + args.batch - 1) // args.batch
    for epoch in range(args.epochs):
        total, n = 0.0, 0
        for i, (inp, tgt, mask) in enumerate(batches(enc_train, args.batch, args.max_len, rng)):
            loss, g = nets.lstm_loss_grad(p, inp, tgt, mask)
            opt.step(p, g)
            total += loss
            n += 1
            if i % 10 == 0 or i + 1 == n_batches:
                progress(f"lstm epoch {epoch + 1}/{args.epochs}", i + 1, n_batches, f"loss {total / n:.3f}")
    ranks = next_call_ranks(p, enc_cal)
    top_k, fp = calibrate_top_k(ranks, len(enc_cal), len(vocab), index[UNKNOWN], enc_cal, args.calibrate, args.target)
    probs = np.array([pr for _, pr, _ in ranks])
    # Per-call judging also flags a call the model gives less probability than all but
    # `target` of held-out normal calls, so a transition inside the top k but rarely taken
    # (a shortcut among few routes) still counts as rare. Session-level data (HDFS) uses top-k alone.
    known = np.array([pr for (_, pr, _), tok in zip(ranks, (t for s in enc_cal for t in s)) if tok != index[UNKNOWN]])
    min_probability = float(np.quantile(known, args.target)) if args.calibrate == "call" and len(known) else 0.0
    call_fp = float(np.mean([(rk >= top_k) or (pr < min_probability) for (_, pr, rk) in ranks])) if ranks else 0.0
    model = lstm_export(p, len(vocab))
    os.makedirs(args.out, exist_ok=True)
    tmp = os.path.join(args.out, "model.onnx")
    onnx.save(model, tmp)
    inputs, outputs = io_spec(model)
    L, H = args.layers, args.hidden
    card = {
        "name": args.name,
        "kind": "lstm",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "outputs": outputs,
        "vocabulary": vocab,
        "start_token": 0,
        "unknown_token": 1,
        "end_token": index[END] if args.end_token else None,
        "layers": L,
        "hidden": H,
        "embed": args.embed,
        "architecture": f"embedding {args.embed}, {L}x{H} LSTM, softmax over {len(vocab)} tokens; one step per call with carried state",
        "top_k": top_k,
        "min_probability": min_probability,
        "threshold_rule": f"a call is rare when it is not among the model's top {top_k} predictions (k: the smallest with a {args.calibrate}-level false-positive rate <= {args.target} on held-out normal sessions)"
        + (f" or its probability is below {min_probability:.3g} (the {args.target} quantile of held-out normal calls)" if min_probability > 0 else ""),
        "training": {
            "source": os.path.basename(args.sessions),
            "sha256": sha256_file(args.sessions),
            "sessions": len(train),
            "sessions_in_source": total_sessions,
            "calibration_sessions": len(cal),
            "holdout_sessions": len(hold),
            "calls": int(sum(len(s) for s in train)),
            "epochs": args.epochs,
            "seconds": round(time.time() - t0, 1),
            "seed": args.seed,
        },
        "validation": {
            "calibration_false_positive_rate": fp,
            "calibration_call_rare_rate": call_fp,
            "level": args.calibrate,
            "mean_log_likelihood": float(np.log(probs + 1e-12).mean()),
            "top1_accuracy": float(np.mean([rk == 0 for _, _, rk in ranks])),
        },
    }
    # Fixtures: a batch of three sessions stepped four times with carried state.
    b = 3
    h = np.zeros((L, b, H), dtype=np.float32)
    c = np.zeros((L, b, H), dtype=np.float32)
    steps = []
    tok = np.zeros(b, dtype=np.int64)
    for _ in range(4):
        out = run_onnx(tmp, {"token": tok, "h_in": h, "c_in": c})
        steps.append({
            "inputs": {"token": {"shape": [b], "data": tok.tolist()},
                       "h_in": {"shape": list(h.shape), "data": h.ravel().tolist()},
                       "c_in": {"shape": list(c.shape), "data": c.ravel().tolist()}},
            "outputs": {k: {"shape": list(v.shape), "data": v.ravel().tolist()} for k, v in out.items()},
        })
        h, c = out["h_out"], out["c_out"]
        tok = rng.integers(0, len(vocab), size=b).astype(np.int64)
    save(args.out, model, card, {"steps": steps})
    print(json.dumps({"model": args.out, "vocabulary": len(vocab), "top_k": top_k, "calibration_fp": fp}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("autoencoder", help="per-request AutoEncoder from an `apiwatch features` requests.csv")
    a.add_argument("--features", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--hidden", type=int, default=16)
    a.add_argument("--code", type=int, default=4)
    a.add_argument("--epochs", type=int, default=8)
    a.add_argument("--batch", type=int, default=256)
    a.add_argument("--lr", type=float, default=3e-3)
    a.add_argument("--holdout", type=float, default=0.1)
    a.add_argument("--quantile", type=float, default=0.995)
    a.add_argument("--max-rows", type=int, default=300000, help="uniform sample of at most this many rows (0: all)")
    a.add_argument("--seed", type=int, default=7)
    s = sub.add_parser("lstm", help="next-call LSTM from sessions (one a line, space-separated tokens)")
    s.add_argument("--sessions", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--name", default="lstm")
    s.add_argument("--layers", type=int, default=1)
    s.add_argument("--hidden", type=int, default=32)
    s.add_argument("--embed", type=int, default=16)
    s.add_argument("--epochs", type=int, default=6)
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--lr", type=float, default=5e-3)
    s.add_argument("--max-len", type=int, default=200)
    s.add_argument("--max-sessions", type=int, default=40000, help="uniform sample of at most this many sessions (0: all)")
    s.add_argument("--min-count", type=int, default=2)
    s.add_argument("--holdout", type=float, default=0.0, help="share of sessions kept out entirely (written to --holdout-out)")
    s.add_argument("--holdout-out")
    s.add_argument("--calibration", type=float, default=0.1, help="share of sessions used to calibrate top-k")
    s.add_argument("--calibrate", choices=["call", "session"], default="call")
    s.add_argument("--target", type=float, default=0.001)
    s.add_argument("--end-token", action="store_true", help="learn session ends (for data whose sessions are complete, like HDFS blocks)")
    s.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    {"autoencoder": train_autoencoder, "lstm": train_lstm}[args.cmd](args)


if __name__ == "__main__":
    main()
