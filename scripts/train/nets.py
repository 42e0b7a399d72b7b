"""The two networks, in numpy: forward passes, hand-written gradients, Adam.

Kept free of any deep-learning framework on purpose: the trainer installs in seconds from three
small registry packages, trains the default models on two cores in about a minute, and every
gradient is checked against finite differences by `test_train.py`.

LSTM gates are stored in ONNX order (input, output, forget, cell) so the weights export as they
are to the ONNX `LSTM` operator.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class Adam:
    """Adam with global gradient-norm clipping."""

    def __init__(self, params: dict, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, clip=5.0):
        self.lr, self.b1, self.b2, self.eps, self.clip = lr, b1, b2, eps, clip
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict, grads: dict):
        self.t += 1
        norm = np.sqrt(sum(float((g * g).sum()) for g in grads.values()))
        scale = min(1.0, self.clip / (norm + 1e-12))
        for k, g in grads.items():
            g = g * scale
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            mh = self.m[k] / (1 - self.b1**self.t)
            vh = self.v[k] / (1 - self.b2**self.t)
            params[k] -= self.lr * mh / (np.sqrt(vh) + self.eps)


# --- AutoEncoder ------------------------------------------------------------------------------


def ae_init(d: int, hidden: int, code: int, rng) -> dict:
    def dense(i, o):
        return rng.normal(0.0, np.sqrt(1.0 / i), size=(i, o))

    return {
        "W1": dense(d, hidden), "b1": np.zeros(hidden),
        "W2": dense(hidden, code), "b2": np.zeros(code),
        "W3": dense(code, hidden), "b3": np.zeros(hidden),
        "W4": dense(hidden, d), "b4": np.zeros(d),
    }


def ae_forward(p: dict, x):
    """x: scaled inputs [n, d]. Returns the reconstruction and a cache for the backward pass."""
    h1 = np.tanh(x @ p["W1"] + p["b1"])
    z = h1 @ p["W2"] + p["b2"]
    h2 = np.tanh(z @ p["W3"] + p["b3"])
    r = h2 @ p["W4"] + p["b4"]
    return r, (x, h1, z, h2)


def ae_loss_grad(p: dict, x):
    """Mean squared reconstruction error over rows and features, and its gradients."""
    r, (x, h1, z, h2) = ae_forward(p, x)
    n, d = x.shape
    diff = r - x
    loss = float((diff * diff).mean())
    dr = 2.0 * diff / (n * d)
    g = {"W4": h2.T @ dr, "b4": dr.sum(0)}
    dh2 = (dr @ p["W4"].T) * (1 - h2 * h2)
    g["W3"], g["b3"] = z.T @ dh2, dh2.sum(0)
    dz = dh2 @ p["W3"].T
    g["W2"], g["b2"] = h1.T @ dz, dz.sum(0)
    dh1 = (dz @ p["W2"].T) * (1 - h1 * h1)
    g["W1"], g["b1"] = x.T @ dh1, dh1.sum(0)
    return loss, g


# --- LSTM next-token model --------------------------------------------------------------------


def lstm_init(vocab: int, embed: int, hidden: int, layers: int, rng) -> dict:
    p = {"E": rng.normal(0.0, 0.1, size=(vocab, embed))}
    for l in range(layers):
        inp = embed if l == 0 else hidden
        p[f"W{l}"] = rng.normal(0.0, np.sqrt(1.0 / inp), size=(4 * hidden, inp))
        p[f"R{l}"] = rng.normal(0.0, np.sqrt(1.0 / hidden), size=(4 * hidden, hidden))
        b = np.zeros(4 * hidden)
        b[2 * hidden:3 * hidden] = 1.0  # forget-gate bias 1: remember by default
        p[f"b{l}"] = b
    p["Wo"] = rng.normal(0.0, np.sqrt(1.0 / hidden), size=(hidden, vocab))
    p["bo"] = np.zeros(vocab)
    return p


def lstm_layers(p: dict) -> int:
    return sum(1 for k in p if k.startswith("R"))


def lstm_cell(W, R, b, x, h, c):
    """One step of one layer. Gates in ONNX order i, o, f, c."""
    H = h.shape[1]
    a = x @ W.T + h @ R.T + b
    i = sigmoid(a[:, :H])
    o = sigmoid(a[:, H:2 * H])
    f = sigmoid(a[:, 2 * H:3 * H])
    g = np.tanh(a[:, 3 * H:])
    c2 = f * c + i * g
    tc = np.tanh(c2)
    h2 = o * tc
    return h2, c2, (x, h, c, i, o, f, g, tc)


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def lstm_step(p: dict, tokens, h, c):
    """One step for a batch, from carried state: tokens [b], h/c [layers, b, H].
    Returns next-token probabilities [b, V] and the new state. What the ONNX step model does."""
    x = p["E"][tokens]
    hs, cs = [], []
    for l in range(lstm_layers(p)):
        x, c2, _ = lstm_cell(p[f"W{l}"], p[f"R{l}"], p[f"b{l}"], x, h[l], c[l])
        hs.append(x)
        cs.append(c2)
    return softmax(x @ p["Wo"] + p["bo"]), np.stack(hs), np.stack(cs)


def lstm_loss_grad(p: dict, inputs, targets, mask):
    """inputs/targets: int [b, T]; mask: float [b, T] (1 where a target exists). Cross-entropy
    averaged over targets, and its gradients by backpropagation through time."""
    L = lstm_layers(p)
    B, T = inputs.shape
    H = p["R0"].shape[1]
    h = [np.zeros((B, H)) for _ in range(L)]
    c = [np.zeros((B, H)) for _ in range(L)]
    caches = [[None] * T for _ in range(L)]
    tops = np.zeros((T, B, H))
    for t in range(T):
        x = p["E"][inputs[:, t]]
        for l in range(L):
            h[l], c[l], caches[l][t] = lstm_cell(p[f"W{l}"], p[f"R{l}"], p[f"b{l}"], x, h[l], c[l])
            x = h[l]
        tops[t] = x
    logits = tops @ p["Wo"] + p["bo"]  # [T, B, V]
    prob = softmax(logits)
    n = max(float(mask.sum()), 1.0)
    tgt = targets.T  # [T, B]
    m = mask.T
    picked = np.take_along_axis(prob, tgt[..., None], axis=2)[..., 0]
    loss = float(-(np.log(picked + 1e-12) * m).sum() / n)
    dlogits = prob.copy()
    np.put_along_axis(dlogits, tgt[..., None], np.take_along_axis(dlogits, tgt[..., None], axis=2) - 1.0, axis=2)
    dlogits *= (m / n)[..., None]
    g = {k: np.zeros_like(v) for k, v in p.items()}
    g["Wo"] = np.einsum("tbh,tbv->hv", tops, dlogits)
    g["bo"] = dlogits.sum((0, 1))
    dtop = dlogits @ p["Wo"].T  # [T, B, H]
    dh_next = [np.zeros((B, H)) for _ in range(L)]
    dc_next = [np.zeros((B, H)) for _ in range(L)]
    for t in reversed(range(T)):
        dx_above = dtop[t]
        for l in reversed(range(L)):
            x, hp, cp, i, o, f, gg, tc = caches[l][t]
            dh = dx_above + dh_next[l]
            do = dh * tc
            dc = dh * o * (1 - tc * tc) + dc_next[l]
            di = dc * gg
            df = dc * cp
            dg = dc * i
            da = np.concatenate([di * i * (1 - i), do * o * (1 - o), df * f * (1 - f), dg * (1 - gg * gg)], axis=1)
            g[f"W{l}"] += da.T @ x
            g[f"R{l}"] += da.T @ hp
            g[f"b{l}"] += da.sum(0)
            dh_next[l] = da @ p[f"R{l}"]
            dc_next[l] = dc * f
            dx_above = da @ p[f"W{l}"]
        np.add.at(g["E"], inputs[:, t], dx_above)
    return loss, g


def lstm_sequence_probs(p: dict, inputs):
    """Probability of every next token along padded sequences [b, T] -> [b, T, V]."""
    L = lstm_layers(p)
    B, T = inputs.shape
    H = p["R0"].shape[1]
    h = np.zeros((L, B, H))
    c = np.zeros((L, B, H))
    out = np.zeros((B, T, p["Wo"].shape[1]))
    for t in range(T):
        out[:, t], h, c = lstm_step(p, inputs[:, t], h, c)
    return out
