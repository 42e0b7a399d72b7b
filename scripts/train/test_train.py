"""Tests of the trainer: gradients against finite differences, the ONNX exports against the
numpy forward passes, and a training smoke run on a tiny set (run by scripts/test.sh)."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import nets  # noqa: E402
import train  # noqa: E402


def numeric_grad(f, p, key, idx, eps=1e-6):
    old = p[key][idx]
    p[key][idx] = old + eps
    up = f()
    p[key][idx] = old - eps
    down = f()
    p[key][idx] = old
    return (up - down) / (2 * eps)


class Gradients(unittest.TestCase):
    def check(self, loss_grad, p, samples=6):
        _, g = loss_grad()
        rng = np.random.default_rng(1)
        for key in p:
            for _ in range(samples):
                idx = tuple(rng.integers(0, s) for s in p[key].shape)
                num = numeric_grad(lambda: loss_grad()[0], p, key, idx)
                self.assertAlmostEqual(g[key][idx], num, delta=1e-6 + 1e-4 * abs(num), msg=f"{key}{idx}")

    def test_autoencoder_gradients(self):
        rng = np.random.default_rng(0)
        p = nets.ae_init(5, 6, 2, rng)
        x = rng.normal(size=(9, 5))
        self.check(lambda: nets.ae_loss_grad(p, x), p)

    def test_lstm_gradients_two_layers_with_padding(self):
        rng = np.random.default_rng(0)
        p = nets.lstm_init(7, 3, 4, 2, rng)
        inp = rng.integers(0, 7, size=(3, 5))
        tgt = rng.integers(0, 7, size=(3, 5))
        mask = np.ones((3, 5))
        mask[1, 3:] = 0
        self.check(lambda: nets.lstm_loss_grad(p, inp, tgt, mask), p)


class Exports(unittest.TestCase):
    def test_lstm_step_model_matches_numpy_and_carries_state(self):
        rng = np.random.default_rng(3)
        p = nets.lstm_init(9, 4, 5, 2, rng)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.onnx")
            import onnx
            onnx.save(train.lstm_export(p, 9), path)
            h = np.zeros((2, 3, 5))
            c = np.zeros((2, 3, 5))
            seq = rng.integers(0, 9, size=(3, 6))
            full = nets.lstm_sequence_probs(p, seq)
            for t in range(6):
                out = train.run_onnx(path, {"token": seq[:, t], "h_in": train.f32(h), "c_in": train.f32(c)})
                np.testing.assert_allclose(out["probabilities"], full[:, t], atol=1e-5)
                h, c = out["h_out"], out["c_out"]

    def test_autoencoder_model_matches_numpy(self):
        rng = np.random.default_rng(4)
        p = nets.ae_init(4, 6, 2, rng)
        mean, std = rng.normal(size=4), rng.uniform(0.5, 2, size=4)
        x = rng.normal(size=(10, 4))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.onnx")
            import onnx
            onnx.save(train.ae_export(p, mean, std, list("abcd")), path)
            out = train.run_onnx(path, {"features": train.f32(x)})
        xs = (x - mean) / std
        r, _ = nets.ae_forward(p, xs)
        np.testing.assert_allclose(out["feature_errors"], (xs - r) ** 2, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["score"], ((xs - r) ** 2).mean(1), rtol=1e-4, atol=1e-5)


class Smoke(unittest.TestCase):
    def test_lstm_learns_a_fixed_order_and_calibrates(self):
        with tempfile.TemporaryDirectory() as d:
            sess = os.path.join(d, "s.txt")
            rng = np.random.default_rng(5)
            with open(sess, "w") as f:
                for _ in range(300):
                    flow = ["login", "list", "view", "pay"] if rng.random() < 0.5 else ["login", "search", "view"]
                    f.write(" ".join(flow) + "\n")
            out = os.path.join(d, "m")
            train.main(["lstm", "--sessions", sess, "--out", out, "--layers", "1", "--hidden", "8", "--embed", "4", "--epochs", "6", "--lr", "0.03"])
            with open(os.path.join(out, "card.json")) as f:
                card = json.load(f)
            self.assertLessEqual(card["top_k"], 2)
            self.assertGreater(card["validation"]["top1_accuracy"], 0.7)
            self.assertTrue(os.path.exists(os.path.join(out, "fixtures.json")))

    def test_autoencoder_flags_rows_far_from_training(self):
        with tempfile.TemporaryDirectory() as d:
            csv = os.path.join(d, "r.csv")
            rng = np.random.default_rng(6)
            z = rng.normal(size=(3000, 1))
            x = np.hstack([z, 2 * z + 0.1 * rng.normal(size=(3000, 1)), rng.normal(size=(3000, 1))])
            np.savetxt(csv, x, delimiter=",", header="a,b,c", comments="")
            out = os.path.join(d, "m")
            train.main(["autoencoder", "--features", csv, "--out", out, "--code", "2", "--epochs", "40"])
            with open(os.path.join(out, "card.json")) as f:
                card = json.load(f)
            res = train.run_onnx(os.path.join(out, "model.onnx"), {"features": train.f32([[1.5, -3.0, 0.0], [0.5, 1.0, 0.2]])})
            # The first row breaks the b = 2a relation the data always kept.
            self.assertGreater(res["score"][0], card["threshold"])
            self.assertLess(res["score"][1], card["threshold"])
            # ...and the errors name a feature of that relation, not the unrelated one.
            self.assertIn(int(np.argmax(res["feature_errors"][0])), (0, 1))


if __name__ == "__main__":
    unittest.main()
