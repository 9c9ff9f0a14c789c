"""Kernels against their NumPy twins; CUDA sources compile with nvcc; the GPU run is marked `gpu`."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources

import numpy as np
import pytest

from datamodels import kernels as K


def _gpu_reason() -> str | None:
    return None if K.cupy_or_none() is not None else "no CuPy with a CUDA device here"


needs_gpu = pytest.mark.skipif(_gpu_reason() is not None, reason=f"gpu test skipped: {_gpu_reason()}")


@pytest.mark.parametrize("name", K.cuda.SOURCES)
def test_cuda_source_compiles_with_nvcc(name, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    src = tmp_path / name
    src.write_text(resources.files("datamodels.kernels").joinpath(name).read_text())
    out = subprocess.run([nvcc, "-std=c++14", "--ptx", "-o", str(tmp_path / "out.ptx"), str(src)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_every_cu_file_is_listed():
    shipped = {p.name for p in resources.files("datamodels.kernels").iterdir() if p.name.endswith(".cu")}
    assert shipped == set(K.cuda.SOURCES)


def test_prox_twin_is_soft_threshold():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(7, 5)).astype(np.float32) * (rng.random((7, 5)) < 0.5)
    R = rng.normal(size=(7, 5)).astype(np.float32)
    lam = np.abs(rng.normal(size=5)).astype(np.float32)
    W0 = W.copy()
    D, moved = K.prox_block_numpy(W, R, lam, 0.9)
    z = W0 + 0.9 * R
    expect = np.sign(z) * np.maximum(np.abs(z) - 0.9 * lam, 0)
    np.testing.assert_allclose(W, expect, rtol=1e-6)
    np.testing.assert_allclose(D, expect - W0, rtol=1e-6, atol=1e-7)
    assert moved and W.dtype == np.float32
    D2, moved2 = K.prox_block_numpy(np.zeros((3, 2)), np.full((3, 2), 0.1), np.ones(2), 1.0)
    assert not moved2 and not D2.any()


def test_bits_twin_roundtrip():
    masks = np.random.default_rng(1).random((33, 21)) < 0.5
    np.testing.assert_array_equal(K.unpack_bits_numpy(K.pack_rows(masks), 21), masks.astype(np.float32))


def test_gram_twin_counts_co_occurrences():
    masks = np.random.default_rng(2).random((130, 19)) < 0.5  # 130 models: a partial last word
    S = K.gram_popcount_numpy(K.pack_columns(masks), np.ones((19, 19)))
    np.testing.assert_array_equal(S, 1 + masks.T.astype(np.int64) @ masks)


@pytest.mark.gpu
@needs_gpu
def test_gpu_kernels_match_twins():
    import cupy

    rng = np.random.default_rng(3)
    for dt in (np.float32, np.float64):
        W = (rng.normal(size=(64, 300)) * (rng.random((64, 300)) < 0.5)).astype(dt)
        R = rng.normal(size=(64, 300)).astype(dt)
        lam = np.abs(rng.normal(size=300)).astype(dt)
        Wg = cupy.asarray(W)
        Dg, moved = K.prox_block(Wg, cupy.asarray(R), cupy.asarray(lam), 0.8)
        D, moved_np = K.prox_block_numpy(W, R, lam, 0.8)
        np.testing.assert_allclose(Wg.get(), W, rtol=1e-6)
        np.testing.assert_allclose(Dg.get(), D, rtol=1e-6, atol=1e-7)
        assert moved == moved_np
    masks = rng.random((1000, 77)) < 0.5
    np.testing.assert_array_equal(K.unpack_bits(cupy.asarray(K.pack_rows(masks)), 77).get(),
                                  K.unpack_bits_numpy(K.pack_rows(masks), 77))
    cols = K.pack_columns(masks)
    S = K.gram_popcount(cupy.asarray(cols), cupy.zeros((77, 77)))
    np.testing.assert_array_equal(S.get(), K.gram_popcount_numpy(cols, np.zeros((77, 77))))
