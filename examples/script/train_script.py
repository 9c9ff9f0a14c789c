"""An external training script: the engine runs it once per model (trainer.kind = "command").

    python train_script.py --data DATA.npz --mask MASK.npy --seed SEED --out OUT.npy

reads the pool and targets the engine wrote (x, y, target_x, target_y), trains
a softmax regression by full-batch gradient descent on the rows where the mask
is True, and writes one margin per target (true-class logit minus the largest
other) as float32 .npy. Nothing here imports the engine: any language would do.
"""

import argparse

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--mask", required=True)
p.add_argument("--seed", type=int, required=True)
p.add_argument("--out", required=True)
p.add_argument("--steps", type=int, default=200)
p.add_argument("--lr", type=float, default=0.5)
a = p.parse_args()

with np.load(a.data) as z:
    x, y, tx, ty = z["x"].reshape(len(z["x"]), -1), z["y"], z["target_x"], z["target_y"]
tx = tx.reshape(len(tx), -1)
mask = np.load(a.mask)
xs, ys = x[mask], y[mask]
classes = int(max(y.max(), ty.max())) + 1
rng = np.random.default_rng(a.seed)
w = rng.normal(0, 0.01, size=(xs.shape[1], classes))
b = np.zeros(classes)
onehot = np.eye(classes)[ys]
for _ in range(a.steps):
    z = xs @ w + b
    p_ = np.exp(z - z.max(1, keepdims=True))
    p_ /= p_.sum(1, keepdims=True)
    g = (p_ - onehot) / len(ys)
    w -= a.lr * (xs.T @ g + 1e-3 * w)
    b -= a.lr * g.sum(0)
logits = tx @ w + b
true = logits[np.arange(len(ty)), ty]
logits[np.arange(len(ty)), ty] = -np.inf
np.save(a.out, (true - logits.max(1)).astype(np.float32))
