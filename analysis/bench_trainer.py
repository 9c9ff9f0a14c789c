"""Benchmark: the batched trainer against a one-model-at-a-time PyTorch loop, side by side.

    python analysis/bench_trainer.py [--spec jobs/digits.toml] [--rounds 4]

Prints ONE JSON line. Both trainers use the demo's spec (model, subset size
alpha * n_train, epochs, batch size, lr, threads) on the digits pool; the loop
is ``datamodels.train.reference.train_one`` (nn.Module + torch.optim.SGD, data
on the device, same init/order/subset). Timing alternates batched and loop
rounds after a warm-up, so load from other processes hits both alike; each
rate is the median over rounds, per wall-clock second and per second of this
process's CPU time (with threads = 1 the latter is what an idle core gives;
the machine this was written on was shared with other jobs). Accuracies are mean test accuracies of the
alpha = 0.5 models; ``acc_gap_same_models`` compares the two trainers on the
same model indices. The MLP is also timed in the other trainer.precision
(fp32 / bf16) in the same rounds, reported under that key. The small CNN (model.name = "cnn") is timed the same way.
Goals on the 2-core CPU: MLP >= 200 models/s and >= 20x the loop, accuracy
>= 0.93 and within 0.5 points; CNN batched >= 5x the loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodels.data import build_dataset  # noqa: E402
from datamodels.masks import sample_masks  # noqa: E402
from datamodels.spec import load_spec  # noqa: E402
from datamodels.train import load_train_data, train_block  # noqa: E402
from datamodels.train.reference import train_one  # noqa: E402


def side_by_side(spec, data, rounds: int, batch_models: int, loop_models: int, start: int, alt=None) -> dict:
    """Alternate timed rounds of `batch_models` batched models and `loop_models` looped ones.

    ``alt = (name, spec)``: a second batched spec (e.g. trainer.precision = "bf16")
    timed in the same rounds on the same models, against the same loop."""
    e, n = spec.experiment, data.x.shape[0]
    torch.set_num_threads(spec.trainer.threads)
    # warm-up: allocator, MKL/oneDNN kernel selection, first-call imports
    warm = sample_masks(e.seed, np.arange(4), n, e.alpha, e.sampler)
    train_block(spec, data, np.arange(4), warm)
    train_one(spec, data, 0, warm[0])
    if alt is not None:
        train_block(alt[1], data, np.arange(4), warm)
    a_rates, a_cpu, a_acc = [], [], []
    b_rates, l_rates, b_cpu, l_cpu, b_acc, l_acc, same = [], [], [], [], [], [], []
    for r in range(rounds):
        idx = np.arange(start + r * batch_models, start + (r + 1) * batch_models)
        masks = sample_masks(e.seed, idx, n, e.alpha, e.sampler)
        t, c = time.perf_counter(), time.process_time()
        out = train_block(spec, data, idx, masks, outputs=("correct",))
        b_rates.append(len(idx) / (time.perf_counter() - t))
        b_cpu.append(len(idx) / (time.process_time() - c))
        acc = out["correct"].mean(1)
        b_acc.extend(acc.tolist())
        if alt is not None:
            t, c = time.perf_counter(), time.process_time()
            aout = train_block(alt[1], data, idx, masks, outputs=("correct",))
            a_rates.append(len(idx) / (time.perf_counter() - t))
            a_cpu.append(len(idx) / (time.process_time() - c))
            a_acc.extend(aout["correct"].mean(1).tolist())
        torch.set_num_threads(spec.trainer.threads)
        t, c = time.perf_counter(), time.process_time()
        # the loop trains the first models of this round's batch: same indices, same subsets
        lacc = [float(train_one(spec, data, int(i), masks[j], ("correct",))["correct"].mean())
                for j, i in enumerate(idx[:loop_models])]
        l_rates.append(loop_models / (time.perf_counter() - t))
        l_cpu.append(loop_models / (time.process_time() - c))
        l_acc.extend(lacc)
        same.extend((acc[:loop_models] - np.array(lacc)).tolist())
    b, lp = statistics.median(b_rates), statistics.median(l_rates)
    bc, lc = statistics.median(b_cpu), statistics.median(l_cpu)
    extra = {}
    if alt is not None:
        ab, ac = statistics.median(a_rates), statistics.median(a_cpu)
        extra = {alt[0]: {"precision": alt[1].trainer.precision, "batched_models_per_s": round(ab, 1),
                          "speedup": round(ab / lp, 1), "batched_models_per_cpu_s": round(ac, 1),
                          "speedup_cpu": round(ac / lc, 1), "batched_acc": round(float(np.mean(a_acc)), 4),
                          "acc_gap_vs_loop": round(float(np.mean(a_acc)) - float(np.mean(l_acc)), 5)}}
    return {
        "precision": spec.trainer.precision,
        "batched_models_per_s": round(b, 1),
        "loop_models_per_s": round(lp, 2),
        "speedup": round(b / lp, 1),
        # per second of this process's CPU time: what an idle machine would give
        # (wall-clock rates drop when other jobs share the cores)
        "batched_models_per_cpu_s": round(bc, 1),
        "loop_models_per_cpu_s": round(lc, 2),
        "speedup_cpu": round(bc / lc, 1),
        "batched_acc": round(float(np.mean(b_acc)), 4),
        "loop_acc": round(float(np.mean(l_acc)), 4),
        "acc_gap_same_models": round(float(np.mean(same)), 5),
        "n_batched": len(b_acc),
        "n_loop": len(l_acc),
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "jobs" / "digits.toml"))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--loop-models", type=int, default=10)
    ap.add_argument("--cnn-width", type=int, default=8)
    ap.add_argument("--cnn-rounds", type=int, default=3)
    ap.add_argument("--cnn-models", type=int, default=100)
    ap.add_argument("--cnn-loop-models", type=int, default=3)
    args = ap.parse_args()

    spec = load_spec(args.spec)
    if spec.data.dataset != "digits":
        raise SystemExit(f"the benchmark runs on digits; {args.spec} has data.dataset = {spec.data.dataset!r}")
    with tempfile.TemporaryDirectory() as tmp:
        build_dataset(spec.data, tmp)
        data = load_train_data(spec.replace(targets={"sets": ["test"]}), tmp)
    t0 = time.perf_counter()
    # the other precision of the batched trainer, timed in the same rounds against the same loop
    other = "bf16" if spec.trainer.precision == "fp32" else "fp32"
    mlp = side_by_side(spec, data, args.rounds, spec.trainer.models_per_batch, args.loop_models, start=0,
                       alt=(other, spec.replace(trainer={"precision": other})))
    cnn_spec = spec.replace(model={"name": "cnn", "width": args.cnn_width},
                            trainer={"models_per_batch": args.cnn_models})
    cnn = side_by_side(cnn_spec, data, args.cnn_rounds, args.cnn_models, args.cnn_loop_models, start=10_000)
    tr = spec.trainer
    print(json.dumps({
        "bench": "trainer",
        "spec": Path(args.spec).name,
        "model": {"name": spec.model.name, "hidden": list(spec.model.hidden)},
        "subset": int(round(spec.experiment.alpha * spec.data.n_train)),
        "trainer": {"epochs": tr.epochs, "batch_size": tr.batch_size, "lr": tr.lr, "momentum": tr.momentum,
                    "weight_decay": tr.weight_decay, "lr_schedule": tr.lr_schedule,
                    "models_per_batch": tr.models_per_batch, "threads": tr.threads,
                    "precision": tr.precision},
        "mlp": mlp,
        "cnn": {"width": args.cnn_width, **cnn},
        "torch": torch.__version__,
        "cpu_threads": tr.threads,
        "wall_s": round(time.perf_counter() - t0, 1),
    }))


if __name__ == "__main__":
    main()
