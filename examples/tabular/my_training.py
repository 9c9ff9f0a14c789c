"""A user's own training code: logistic regression in plain PyTorch, one model per call.

spec.toml names it as ``trainer.function = "my_training:train"`` with
``trainer.per_model = true``; the engine calls it once per model with that
model's subset mask and stores the margins it returns. Run ``datamodels``
from this folder so that ``my_training`` imports (or put it on PYTHONPATH).
"""

import torch

from datamodels.train import margins_from_logits, model_seed


def train(spec, data, index, mask, outputs):
    """Train on data.x[mask] only; margins on every target example: {"margins": float32[k]}."""
    gen = torch.Generator().manual_seed(model_seed(spec, index))  # the same model on every rerun
    x, y = data.x[torch.from_numpy(mask)], data.y[torch.from_numpy(mask)]
    model = torch.nn.Linear(x.shape[1], data.n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=spec.trainer.lr, momentum=spec.trainer.momentum,
                          weight_decay=spec.trainer.weight_decay)
    bs = spec.trainer.batch_size
    for _ in range(spec.trainer.epochs):
        order = torch.randperm(len(y), generator=gen)
        for s in range(0, len(y), bs):
            batch = order[s:s + bs]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    with torch.no_grad():
        return {"margins": margins_from_logits(model(data.target_x), data.target_y)}
