#!/usr/bin/env bash
# Install what the project needs on a fresh Debian machine: FFCV's system
# libraries (apt), a virtual environment in .venv, the CPU build of torch when
# no GPU is present, then the package with its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

need_apt=()
pkg-config --exists opencv4 2>/dev/null || need_apt+=(libopencv-dev)
pkg-config --exists libturbojpeg 2>/dev/null || need_apt+=(libturbojpeg0-dev)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
# A real single-node SLURM for tests/test_slurm.py (started by tests/slurm_cluster.py):
# installed by default (~15 s) so those tests run in CI; WITH_SLURM=0 skips it.
if [ "${WITH_SLURM:-1}" = 1 ]; then
  { [ -x /usr/sbin/slurmctld ] || command -v slurmctld >/dev/null; } \
    && { [ -x /usr/sbin/munged ] || command -v munged >/dev/null; } || need_apt+=(slurm-wlm munge)
fi
# Headless Chromium for tests/test_report_page.py (the report page opened in a real browser), with a font
# for its text; WITH_CHROMIUM=0 skips it (those tests then skip, saying why).
if [ "${WITH_CHROMIUM:-1}" = 1 ]; then
  command -v chromium >/dev/null || need_apt+=(chromium)
  [ -d /usr/share/fonts/truetype/dejavu ] || need_apt+=(fonts-dejavu-core)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install -q "torch>=2.1"
  else
    # a bare `torch` requirement pulls a multi-GB CUDA build: take the CPU wheel first
    $PIP install -q torch==2.13.0
  fi
fi
# The extras (open_clip -> torchvision) must not replace the torch installed above:
# a newer torchvision asks for a newer torch, which pip would take (a CUDA build of
# several GB). Pinning the installed torch makes pip pick the torchvision made for it.
TORCH_PIN=$(mktemp)
"$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__)" >"$TORCH_PIN"
$PIP install -q -c "$TORCH_PIN" -e ".[test]"
rm -f "$TORCH_PIN"
