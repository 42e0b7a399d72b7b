#!/usr/bin/env python3
"""The peer of `apiwatch bench-models`: Python's onnxruntime on the same model files, same
batch sizes, one thread. Prints JSON."""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--autoencoder", required=True)
    ap.add_argument("--lstm", required=True)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--sessions", type=int, default=256)
    a = ap.parse_args()
    ae = session(a.autoencoder)
    d = ae.get_inputs()[0].shape[1]
    x = ((np.arange(a.batch * d) * 7919 % 101) / 400.0 - 0.125).astype(np.float32).reshape(a.batch, d)
    ae.run(None, {"features": x})
    runs = max(-(-a.rows // a.batch), 1)
    t = time.perf_counter()
    for _ in range(runs):
        ae.run(None, {"features": x})
    ae_rate = runs * a.batch / (time.perf_counter() - t)
    lstm = session(a.lstm)
    L, _, H = lstm.get_inputs()[1].shape
    V = lstm.get_outputs()[0].shape[1]
    b = a.sessions
    h = np.zeros((L, b, H), np.float32)
    c = np.zeros((L, b, H), np.float32)
    tok = (np.arange(b) % V).astype(np.int64)
    lstm.run(None, {"token": tok, "h_in": h, "c_in": c})
    runs = max(-(-(a.rows // 20) // b), 1)
    t = time.perf_counter()
    for r in range(runs):
        p, h, c = lstm.run(None, {"token": tok, "h_in": h, "c_in": c})
        ranks = (p > p[np.arange(b), 2 % V][:, None]).sum(1)
        tok = ((np.arange(b) + r) * 31 + 7) % V
    us = (time.perf_counter() - t) * 1e6 / (runs * b)
    print(json.dumps({"autoencoder_rows_per_s": round(ae_rate), "lstm_micros_per_call": round(us, 3), "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main()
