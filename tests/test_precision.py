"""trainer.precision = "auto": bf16 only where the machine has native bfloat16 matmuls."""

import pytest

from datamodels.train import precision as P


@pytest.mark.parametrize("text,native", [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma amx_bf16 amx_tile\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw\n", False),  # AVX-512 without BF16
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),  # Arm (Graviton 3, Neoverse V1)
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n", False),
    ("no feature lines at all\n", False),
])
def test_cpu_flags_decide_native_bf16(tmp_path, text, native):
    f = tmp_path / "cpuinfo"
    f.write_text(text)
    assert P.cpu_has_native_bf16(str(f)) is native


def test_missing_cpuinfo_means_no_native_bf16(tmp_path):
    assert P.cpu_has_native_bf16(str(tmp_path / "absent")) is False


def test_auto_follows_the_cpu_and_explicit_values_are_kept(monkeypatch):
    for native, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(P, "cpu_has_native_bf16", lambda native=native: native)
        monkeypatch.setattr(P.platform, "machine", lambda: "x86_64")
        assert P.resolve_precision("auto", "cpu") == want
        # autograd-trained models (the CNN, a user's module) have no bf16 path: always fp32 under "auto"
        assert P.resolve_precision("auto", "cpu", by_hand=False) == "fp32"
        assert P.resolve_precision("fp32", "cpu") == "fp32"
        assert P.resolve_precision("bf16", "cpu") == "bf16"
