#!/usr/bin/env bash
# The prepared accelerator check (issue 20): install the JAX build for the accelerator, then measure
# everything as JSON under OUT (default ./device_check_out). Under 8 minutes on one modern GPU.
#
#   benchmarks/device_check.sh [OUT] [--data DIR] [--tiny] [--no-install] [--only STEP ...]
#
# --no-install   keep the installed JAX (e.g. a machine without internet, where the CUDA wheels were
#                installed beforehand: pip install --no-index --find-links WHEELS "jax[cuda12]==<version>")
# --tiny         toy sizes on whatever JAX finds (the CPU test in tests/test_device_check.py runs this)
# --data DIR     folder with binarized_mnist.npz for the reduced-budget iwae_mnist run
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
out="device_check_out"
install=1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) install=0 ;;
    --tiny) install=0; args+=("--tiny") ;;
    --data) args+=("--data" "$2"); shift ;;
    --*) args+=("$1") ;;
    *) if [ -z "${out_set:-}" ]; then out="$1"; out_set=1; else args+=("$1"); fi ;;  # values of --only
  esac
  shift
done
if [ "$install" = 1 ]; then
  ver=$("$PY" -c 'import jax; print(jax.__version__)' 2>/dev/null || echo "")
  if command -v nvidia-smi >/dev/null 2>&1; then
    extra="cuda12"
  elif [ -e /dev/accel0 ] || [ -n "${TPU_NAME:-}" ]; then
    extra="tpu"
  else
    extra=""
  fi
  if [ -n "$extra" ] && ! "$PY" -c "import jax,sys; sys.exit(jax.default_backend()=='cpu')" 2>/dev/null; then
    echo "[device_check] installing jax[$extra]${ver:+==$ver}"
    "$PY" -m pip install -q "jax[$extra]${ver:+==$ver}" || echo "[device_check] install failed; measuring with the installed JAX"
  fi
fi
exec "$PY" benchmarks/device_check.py "$out" "${args[@]}"
