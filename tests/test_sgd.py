"""The batched trainer's optimizer updates against torch.optim.SGD."""

import numpy as np
import pytest
import torch

from datamodels.spec import Trainer
from datamodels.train import sgd


def _torch_sgd(p, g, tr, lr):
    """torch.optim.SGD from the same start: the float32 weights after one step per gradient."""
    w = torch.nn.Parameter(p.clone())
    opt = torch.optim.SGD([w], lr=lr, momentum=tr.momentum, weight_decay=tr.weight_decay, nesterov=tr.nesterov)
    for gi in g:
        w.grad = gi.clone()
        opt.step()
    return w.detach()


@pytest.mark.parametrize("nesterov", [False, True])
def test_master_step_follows_torch_sgd_and_writes_the_bf16_copy(nesterov):
    torch.manual_seed(0)
    tr = Trainer(lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=nesterov)
    n = 1000  # not a multiple of the vector width: the tail must take the same arithmetic
    p0 = torch.randn(n)
    grads = [torch.randn(n).bfloat16() for _ in range(5)]
    p, m, low = p0.clone(), torch.zeros(n), torch.empty(n, dtype=torch.bfloat16)
    lr = torch.tensor(0.1)
    for g in grads:
        sgd.master_step(p, m, g, low, tr, lr)
    ref = _torch_sgd(p0, [g.float() for g in grads], tr, 0.1)
    # float32 rounding only (the fused update may contract a multiply-add)
    np.testing.assert_allclose(p.numpy(), ref.numpy(), rtol=0, atol=1e-5)
    assert torch.equal(low, p.bfloat16())  # the copy the next matmuls read, rounded to nearest
    # a wrong update (no weight decay, no momentum, or the bf16 copy stale) is far off
    assert (p - p0).abs().max() > 0.1


def test_master_step_does_not_depend_on_the_buffer_around_an_element():
    torch.manual_seed(1)
    tr = Trainer(lr=0.05, momentum=0.9, weight_decay=5e-3)
    lr = torch.tensor(0.05)
    big = [torch.randn(4099), torch.randn(4099), torch.randn(4099).bfloat16()]
    tail = [t[-37:].clone() for t in big]
    low_big, low_tail = torch.empty(4099, dtype=torch.bfloat16), torch.empty(37, dtype=torch.bfloat16)
    sgd.master_step(big[0], big[1], big[2], low_big, tr, lr)
    sgd.master_step(tail[0], tail[1], tail[2], low_tail, tr, lr)
    assert torch.equal(big[0][-37:], tail[0]) and torch.equal(big[1][-37:], tail[1])
