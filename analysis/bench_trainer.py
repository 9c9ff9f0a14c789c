"""Benchmark: the batched trainer against a one-model-at-a-time PyTorch loop, side by side.

    python analysis/bench_trainer.py [--spec jobs/digits.toml] [--rounds 4]

Prints ONE JSON line. Both trainers use the demo's spec (model, subset size
alpha * n_train, epochs, batch size, lr) on the digits pool. The loop is
``datamodels.train.reference.train_one`` (nn.Module + torch.optim.SGD, data
on the device, same init/order/subset) in float32: under bf16 autocast the
one-model loop runs slower (autocast's per-op casts cost more than they save
at this size), so float32 is the faster, and fairer, baseline.

Two measurements, each alternating batched and loop work so that load from
other processes hits both alike:

- ``per_process``: one process, trainer.threads threads; rates per
  wall-clock second and per second of this process's CPU time (the median
  over rounds). The MLP is also timed in the other trainer.precision.
- ``machine``: what the whole machine gives, the way ``datamodels run`` uses
  it: ``--workers`` processes (one per core, trainer.threads each) started
  together, each training its share; rate = all models / wall time of the
  slowest. The loop is run the same way.

Accuracies are mean test accuracies of the alpha = 0.5 models;
``acc_gap_same_models`` compares the two trainers on the same model indices.
The small CNN (model.name = "cnn") is timed per process the same way, in
float32 on both sides.

``generic``: the same MLP written as a user's plain ``nn.Module``
(``model.name = "datamodels.testing.models:mlp"``) on the generic batched
path (torch.func vmap, :mod:`datamodels.train.vmap`), timed in the same rounds
as the hand-written MLP (float32, the same models) and the one-at-a-time loop
of that module (``trainer.kind = "reference"``), per process. Goals on the 2-core CPU: MLP >= 200 models/s and >= 20x
the loop, accuracy >= 0.93 and within 0.5 points; CNN batched >= 5x the loop.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
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
from datamodels.seeds import sample_masks  # noqa: E402
from datamodels.spec import load_spec  # noqa: E402
from datamodels.train import load_train_data, train_block  # noqa: E402
from datamodels.train.reference import train_one  # noqa: E402


def warm_up(spec, data, loop_spec) -> None:
    """Allocator, MKL/oneDNN kernel selection, torch.compile of the bf16 optimizer, first-call imports."""
    torch.set_num_threads(spec.trainer.threads)
    warm = sample_masks(spec.experiment.seed, np.arange(4), data.x.shape[0], spec.experiment.alpha,
                        spec.experiment.sampler)
    train_block(spec, data, np.arange(4), warm)
    train_one(loop_spec, data, 0, warm[0])


def loop_accuracies(spec, data, idx, masks) -> list[float]:
    return [float(train_one(spec, data, int(i), masks[j], ("correct",))["correct"].mean()) for j, i in enumerate(idx)]


def side_by_side(spec, loop_spec, data, rounds: int, batch_models: int, loop_models: int, start: int,
                 alt=None) -> dict:
    """Alternate timed rounds of `batch_models` batched models and `loop_models` looped ones in this process.

    ``alt = (name, spec)``: a second batched spec (the other trainer.precision)
    timed in the same rounds on the same models, against the same loop."""
    e, n = spec.experiment, data.x.shape[0]
    warm_up(spec, data, loop_spec)
    if alt is not None:
        warm_up(alt[1], data, loop_spec)
    rates = {"b": [], "l": [], "a": []}
    cpu = {"b": [], "l": [], "a": []}
    acc = {"b": [], "l": [], "a": []}
    same = []

    def timed(key, count, fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        rates[key].append(count / (time.perf_counter() - t))
        cpu[key].append(count / (time.process_time() - c))
        return out

    for r in range(rounds):
        idx = np.arange(start + r * batch_models, start + (r + 1) * batch_models)
        masks = sample_masks(e.seed, idx, n, e.alpha, e.sampler)
        out = timed("b", len(idx), lambda: train_block(spec, data, idx, masks, outputs=("correct",)))
        b_acc = out["correct"].mean(1)
        acc["b"].extend(b_acc.tolist())
        if alt is not None:
            out = timed("a", len(idx), lambda: train_block(alt[1], data, idx, masks, outputs=("correct",)))
            acc["a"].extend(out["correct"].mean(1).tolist())
        torch.set_num_threads(spec.trainer.threads)
        # the loop trains the first models of this round's batch: same indices, same subsets
        l_acc = timed("l", loop_models, lambda: loop_accuracies(loop_spec, data, idx[:loop_models], masks))
        acc["l"].extend(l_acc)
        same.extend((b_acc[:loop_models] - np.array(l_acc)).tolist())
    med = {k: statistics.median(v) for k, v in rates.items() if v}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items() if v}
    extra = {}
    if alt is not None:
        extra = {alt[0]: {"precision": alt[1].trainer.precision, "batched_models_per_s": round(med["a"], 1),
                          "speedup": round(med["a"] / med["l"], 1),
                          "batched_models_per_cpu_s": round(med_cpu["a"], 1),
                          "speedup_cpu": round(med_cpu["a"] / med_cpu["l"], 1),
                          "batched_acc": round(float(np.mean(acc["a"])), 4),
                          "acc_gap_vs_loop": round(float(np.mean(acc["a"])) - float(np.mean(acc["l"])), 5)}}
    return {
        "precision": spec.trainer.precision,
        "loop_precision": loop_spec.trainer.precision,
        "batched_models_per_s": round(med["b"], 1),
        "loop_models_per_s": round(med["l"], 2),
        "speedup": round(med["b"] / med["l"], 1),
        # per second of this process's CPU time: what an idle core would give
        "batched_models_per_cpu_s": round(med_cpu["b"], 1),
        "loop_models_per_cpu_s": round(med_cpu["l"], 2),
        "speedup_cpu": round(med_cpu["b"] / med_cpu["l"], 1),
        "batched_acc": round(float(np.mean(acc["b"])), 4),
        "loop_acc": round(float(np.mean(acc["l"])), 4),
        "acc_gap_same_models": round(float(np.mean(same)), 5),
        "n_batched": len(acc["b"]),
        "n_loop": len(acc["l"]),
        **extra,
    }


GENERIC_MLP = "datamodels.testing.models:mlp"


def generic_side_by_side(spec, data, rounds: int, models: int, loop_models: int, start: int) -> dict:
    """Hand-written MLP, the same MLP as a user nn.Module on the generic batched path, and its one-model loop.

    Each round trains ``models`` models by hand and generically (same indices
    and subsets) and ``loop_models`` of them in the loop, in this process."""
    hand = spec.replace(trainer={"precision": "fp32", "models_per_batch": models})
    generic = hand.replace(model={"name": GENERIC_MLP})
    e, n = spec.experiment, data.x.shape[0]
    warm = sample_masks(e.seed, np.arange(2), n, e.alpha, e.sampler)
    for s in (hand, generic):
        train_block(s, data, np.arange(2), warm)
    train_one(generic, data, 0, warm[0])
    rates = {"hand": [], "generic": [], "loop": []}
    acc = {"hand": [], "generic": [], "loop": []}
    for r in range(rounds):
        idx = np.arange(start + r * models, start + (r + 1) * models)
        masks = sample_masks(e.seed, idx, n, e.alpha, e.sampler)
        for key, s in (("hand", hand), ("generic", generic)):
            t = time.perf_counter()
            out = train_block(s, data, idx, masks, outputs=("correct",))
            rates[key].append(len(idx) / (time.perf_counter() - t))
            acc[key].extend(out["correct"].mean(1).tolist())
        torch.set_num_threads(spec.trainer.threads)
        t = time.perf_counter()
        acc["loop"].extend(loop_accuracies(generic, data, idx[:loop_models], masks))
        rates["loop"].append(loop_models / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "model": GENERIC_MLP, "precision": "fp32", "models_per_batch": models,
        "hand_written_models_per_s": round(med["hand"], 1),
        "generic_models_per_s": round(med["generic"], 1),
        "loop_models_per_s": round(med["loop"], 2),
        "generic_over_loop": round(med["generic"] / med["loop"], 1),
        "hand_written_over_generic": round(med["hand"] / med["generic"], 1),
        "hand_written_acc": round(float(np.mean(acc["hand"])), 4),
        "generic_acc": round(float(np.mean(acc["generic"])), 4),
        "loop_acc": round(float(np.mean(acc["loop"])), 4),
        "rounds": rounds, "n_loop": len(acc["loop"]),
    }


def _machine_worker(spec_path, data_dir, kind, indices, barrier, queue) -> None:
    spec = load_spec(spec_path)
    loop_spec = spec.replace(trainer={"precision": "fp32"})
    data = load_train_data(spec.replace(targets={"sets": ["test"]}), data_dir)
    warm_up(spec, data, loop_spec)
    e = spec.experiment
    masks = sample_masks(e.seed, indices, data.x.shape[0], e.alpha, e.sampler)
    barrier.wait()
    t = time.perf_counter()
    if kind == "batched":
        train_block(spec, data, indices, masks, outputs=("correct",))
    else:
        loop_accuracies(loop_spec, data, indices, masks)
    queue.put(time.perf_counter() - t)


def machine_rate(spec_path: str, data_dir: str, kind: str, workers: int, per_worker: int, start: int) -> float:
    """Models per wall-clock second of `workers` processes training `per_worker` models each at once."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    shares = [np.arange(start + w * per_worker, start + (w + 1) * per_worker) for w in range(workers)]
    procs = [ctx.Process(target=_machine_worker, args=(spec_path, data_dir, kind, share, barrier, queue))
             for share in shares]
    for p in procs:
        p.start()
    secs = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return workers * per_worker / max(secs)


def machine(spec_path: str, data_dir: str, workers: int, rounds: int, batched_per_worker: int,
            loop_per_worker: int) -> dict:
    b, lp = [], []
    for r in range(rounds):
        b.append(machine_rate(spec_path, data_dir, "batched", workers, batched_per_worker, 20_000 + 1000 * r))
        lp.append(machine_rate(spec_path, data_dir, "loop", workers, loop_per_worker, 30_000 + 1000 * r))
    bm, lm = statistics.median(b), statistics.median(lp)
    return {"workers": workers, "batched_models_per_s": round(bm, 1), "loop_models_per_s": round(lm, 2),
            "speedup": round(bm / lm, 1), "batched_models_per_worker": batched_per_worker,
            "loop_models_per_worker": loop_per_worker, "rounds": rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "jobs" / "digits.toml"))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--loop-models", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2, help="processes for the machine-wide rates (one per core)")
    ap.add_argument("--machine-rounds", type=int, default=2)
    ap.add_argument("--cnn-width", type=int, default=8)
    ap.add_argument("--cnn-rounds", type=int, default=3)
    ap.add_argument("--cnn-models", type=int, default=100)
    ap.add_argument("--cnn-loop-models", type=int, default=3)
    ap.add_argument("--generic-rounds", type=int, default=3)
    ap.add_argument("--generic-models", type=int, default=100)
    ap.add_argument("--only-generic", action="store_true", help="time the generic path alone (no mlp/cnn sections)")
    args = ap.parse_args()

    spec = load_spec(args.spec)
    if spec.data.dataset != "digits":
        raise SystemExit(f"the benchmark runs on digits; {args.spec} has data.dataset = {spec.data.dataset!r}")
    loop_spec = spec.replace(trainer={"precision": "fp32"})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        build_dataset(spec.data, tmp)
        data = load_train_data(spec.replace(targets={"sets": ["test"]}), tmp)
        generic = generic_side_by_side(spec, data, args.generic_rounds, args.generic_models, args.loop_models,
                                       start=40_000)
        sections: dict = {"generic": generic}
        if not args.only_generic:
            # the other precision of the batched trainer, timed in the same rounds against the same loop
            other = "bf16" if spec.trainer.precision == "fp32" else "fp32"
            mlp = side_by_side(spec, loop_spec, data, args.rounds, spec.trainer.models_per_batch,
                               args.loop_models, start=0, alt=(other, spec.replace(trainer={"precision": other})))
            whole = machine(args.spec, tmp, args.workers, args.machine_rounds, 2 * spec.trainer.models_per_batch,
                            args.loop_models)
            cnn_spec = spec.replace(model={"name": "cnn", "width": args.cnn_width},
                                    trainer={"models_per_batch": args.cnn_models, "precision": "fp32"})
            cnn = side_by_side(cnn_spec, cnn_spec, data, args.cnn_rounds, args.cnn_models, args.cnn_loop_models,
                               start=10_000)
            sections = {"mlp": {"machine": whole, "per_process": mlp}, "cnn": {"width": args.cnn_width, **cnn},
                        **sections}
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
        **sections,
        "torch": torch.__version__,
        "wall_s": round(time.perf_counter() - t0, 1),
    }))


if __name__ == "__main__":
    main()
