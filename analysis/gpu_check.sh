#!/usr/bin/env bash
# GPU check, one script under 10 minutes on one GPU: prints ONE JSON line (and writes
# analysis/results/gpu_check.json) with times, accuracies and peak device memory.
#
#   1. the `gpu`-marked tests (kernels against their NumPy twins, the solver on CuPy);
#   2. a CIFAR-shaped fit on the GPU (CuPy): n = 50,000 (or the largest n whose stated
#      bound fits the device), m = 2 n models, k = 1,000 targets, datamodel-like data
#      made on the GPU, peak device memory against the bound the fit states;
#   3. a few ResNet-9 models through the FFCV trainer on a synthetic CIFAR-format archive
#      (tests/test_cifar10.py's generator, 10,000 images), on the GPU;
#   4. a few hundred digits models through the batched trainer, on the GPU.
#
# Usage: bash analysis/gpu_check.sh                      (on a machine with a CUDA GPU and CuPy)
#        GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1 bash analysis/gpu_check.sh
#                                                      (the CPU-safe parts at toy sizes: checks the script)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
SMALL=${GPU_CHECK_SMALL:-0}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

t0=$(date +%s)
if [ "$DEVICE" = "cuda" ]; then
    timeout 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels.py tests/test_regress_solver.py \
        > "$OUT/pytest.txt" 2>&1
    echo $? > "$OUT/pytest.rc"
else
    echo "skipped: no GPU (GPU_CHECK_DEVICE=$DEVICE)" > "$OUT/pytest.txt"
    echo -1 > "$OUT/pytest.rc"
fi
echo $(( $(date +%s) - t0 )) > "$OUT/pytest.s"

DEVICE="$DEVICE" SMALL="$SMALL" OUT="$OUT" timeout 540 "$PY" - <<'EOF'
import json, os, pickle, sys, threading, time, traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, "tests")
sys.path.insert(0, "analysis")
OUT, DEVICE, SMALL = Path(os.environ["OUT"]), os.environ["DEVICE"], os.environ["SMALL"] == "1"
result = {"bench": "gpu_check", "device": DEVICE, "small": SMALL}
txt = (OUT / "pytest.txt").read_text().strip().splitlines()
result["gpu_tests"] = {"rc": int((OUT / "pytest.rc").read_text()), "summary": txt[-1] if txt else "",
                       "time_s": int((OUT / "pytest.s").read_text())}


class PeakDeviceMemory:
    """Polls the CuPy and torch allocators every 20 ms: the largest bytes held (0 without a GPU)."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def _now(self):
        b = 0
        try:
            import cupy
            b += cupy.get_default_memory_pool().total_bytes()
        except Exception:
            pass
        try:
            import torch
            if torch.cuda.is_available():
                b += torch.cuda.memory_reserved()
        except Exception:
            pass
        return b

    def __enter__(self):
        def run():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, self._now())
        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._now())


def section(name, fn):
    t = time.perf_counter()
    try:
        with PeakDeviceMemory() as mem:
            out = fn()
        result[name] = {**out, "time_s": round(time.perf_counter() - t, 1), "peak_device_gb": round(mem.peak / 2**30, 2)}
    except Exception as e:  # a failed section is reported, the others still run
        result[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}


def cifar_shaped_fit():
    from datamodels.regress import Datamodels
    from datamodels.regress.moments import gram_fit_bytes, machine_bytes

    if DEVICE == "cuda":
        import cupy
        import array_api_compat.cupy as xp
        have = machine_bytes(cupy)
    else:
        xp, have = None, machine_bytes()
    k = 50 if SMALL else 1000
    n = 600 if SMALL else 50_000
    while gram_fit_bytes(n, k, 1024)["total"] > 0.85 * have:
        n -= 2500
    m = 2 * n
    # datamodel-like: alpha 0.5 masks, n/20 true weights per target, unit noise (margins made on the GPU)
    rng = np.random.default_rng(0)
    s = max(1, n // 20)
    W = np.zeros((n, k), np.float32)
    for t in range(k):
        W[rng.choice(n, s, replace=False), t] = rng.standard_normal(s) / np.sqrt(s)
    masks = np.empty((m, n), bool)
    margins = np.empty((m, k), np.float32)
    t_make = time.perf_counter()
    Wd = cupy.asarray(W) if DEVICE == "cuda" else W
    for r0 in range(0, m, 4096):
        r1 = min(m, r0 + 4096)
        if DEVICE == "cuda":
            blk = cupy.random.random((r1 - r0, n), dtype=cupy.float32) < 0.5
            masks[r0:r1] = blk.get()
            margins[r0:r1] = (blk.astype(cupy.float32) @ Wd + cupy.random.standard_normal((r1 - r0, k), dtype=cupy.float32) + 3).get()
        else:
            masks[r0:r1] = rng.random((r1 - r0, n), dtype=np.float32) < 0.5
            margins[r0:r1] = masks[r0:r1] @ W + rng.standard_normal((r1 - r0, k), dtype=np.float32) + 3
    t_make = time.perf_counter() - t_make
    dm = Datamodels(xp=xp)
    t = time.perf_counter()
    dm.fit(masks, margins)
    t_fit = time.perf_counter() - t
    pred = dm.predict(masks[-1000:])
    r2 = 1 - ((margins[-1000:] - pred) ** 2).mean() / margins[-1000:].var()
    return {"n": n, "m": m, "k": k, "make_s": round(t_make, 1), "fit_s": round(t_fit, 1), "solver": dm.solver_,
            "bound_gb": round(dm.memory_bytes(n, k)["total"] / 2**30, 2), "nnz_mean": float(dm.n_nonzero_.mean()),
            "r2_last_1000": round(float(r2), 3)}


def resnet9_ffcv():
    import test_cifar10 as tc
    from datamodels.data import build_dataset
    from datamodels.seeds import sample_masks
    from datamodels.spec import Spec
    from datamodels.train import load_train_data, train_block

    tc.N_PER_BATCH, tc.N_TEST = (60, 50) if SMALL else (2000, 1000)
    base = OUT / "cifar"
    tc.write_archive(base / "cifar-10-batches-py")
    n_train = 250 if SMALL else 10_000
    spec = Spec().replace(
        data={"dataset": "cifar10", "n_train": n_train, "root": str(base)},
        model={"name": "resnet9", "width": 4 if SMALL else 64},
        trainer={"kind": "ffcv", "epochs": 2 if SMALL else 8, "batch_size": 32 if SMALL else 512, "lr": 0.2,
                 "momentum": 0.9, "nesterov": True, "label_smoothing": 0.1, "lr_schedule": "triangle",
                 "lr_peak_epoch": 0.5 if SMALL else 2.0, "threads": min(8, os.cpu_count()), "device": DEVICE},
        targets={"sets": ["test"]},
    )
    build_dataset(spec.data, base / "data")
    data = load_train_data(spec, base / "data")
    n_models = 2 if SMALL else 4
    masks = sample_masks(0, np.arange(n_models), n_train, 0.5)
    t = time.perf_counter()
    out = train_block(spec, data, list(range(n_models)), masks, outputs=("margins", "correct"))
    dt = time.perf_counter() - t
    return {"models": n_models, "n_train": n_train, "s_per_model": round(dt / n_models, 2),
            "test_accuracy": [round(float(a), 3) for a in out["correct"].mean(axis=1)]}


def digits_batched():
    from datamodels.data import build_dataset
    from datamodels.seeds import sample_masks
    from datamodels.spec import load_spec
    from datamodels.train import load_train_data, train_block

    spec = load_spec("jobs/digits.toml")
    spec = spec.replace(trainer={"device": DEVICE, **({"epochs": 2, "lr_peak_epoch": 1.0} if SMALL else {})})
    build_dataset(spec.data, OUT / "digits")
    data = load_train_data(spec, OUT / "digits")
    n_models = 20 if SMALL else 500
    n = spec.data.n_train
    masks = sample_masks(spec.experiment.seed, np.arange(n_models), n, spec.experiment.alpha)
    train_block(spec, data, [0], masks[:1])  # warm up (kernels, allocator)
    t = time.perf_counter()
    out = train_block(spec, data, list(range(n_models)), masks, outputs=("margins", "correct"))
    dt = time.perf_counter() - t
    return {"models": n_models, "models_per_s": round(n_models / dt, 1),
            "test_accuracy_mean": round(float(out["correct"].mean()), 4)}


section("cifar_shaped_fit", cifar_shaped_fit)
section("resnet9_ffcv", resnet9_ffcv)
section("digits_batched", digits_batched)
from results_io import emit
emit(result, "gpu_check" if DEVICE == "cuda" and not SMALL else "gpu_check_cpu_small")
EOF
