#!/usr/bin/env bash
# The prepared accelerator check (issue 31): measure jaxvae on whatever accelerator the machine's own Python
# finds, in at most 8 minutes, into OUT/summary.json and OUT/summary.md (benchmarks/device_check.py lists the
# steps and their time limits; benchmarks/README.md "Running the device check" gives the exact command).
#
#   benchmarks/device_check.sh [OUT] [--wheels DIR] [--mnist FILE] [--tiny] [--budget-s S] [--only STEP ...]
#
# Runs from the source tree (PYTHONPATH = the repository root; no `pip install -e .`, whose pins may refuse
# the machine's jax) with the machine's Python as it is ($PYTHON, default python3): no registry is reached.
# --wheels DIR   install the carried wheels DIR/*.whl (benchmarks/fetch_device_wheels.sh: the packages jaxvae
#                needs that the device image lacks) with `pip install --no-index --no-deps --target` into a
#                scratch folder put first on PYTHONPATH (if pip refuses, the wheels themselves go on PYTHONPATH);
#                DIR/binarized_mnist.npz, when there, is the --mnist data
# --mnist FILE   binarized_mnist.npz for the evaluation, AIS, bf16 and two-layer steps (else random images)
# --tiny         toy sizes on whatever JAX finds (tests/test_device_check.py runs this on CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
out="device_check_out"
wheels=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift ;;
    --mnist|--budget-s|--timeout-scale) args+=("$1" "$2"); shift ;;
    --*) args+=("$1") ;;
    *) if [ -z "${out_set:-}" ]; then out="$1"; out_set=1; else args+=("$1"); fi ;;  # values of --only
  esac
  shift
done
mkdir -p "$out"
if [ -n "$wheels" ]; then
  shopt -s nullglob
  whl=("$wheels"/*.whl)
  shopt -u nullglob
  site="${TMPDIR:-/tmp}/jaxvae_device_site"
  rm -rf "$site"
  if [ "${#whl[@]}" -eq 0 ]; then
    echo "[device_check] no wheels in $wheels (run benchmarks/fetch_device_wheels.sh first)"
  elif "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
       "${whl[@]}" >"$out/wheels.log" 2>&1; then
    echo "[device_check] installed ${#whl[@]} carried wheels into $site: $(cd "$wheels" && ls *.whl | tr '\n' ' ')"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "[device_check] pip refused the wheels (see $out/wheels.log): putting them on PYTHONPATH as they are"
    for w in "${whl[@]}"; do export PYTHONPATH="$(cd "$(dirname "$w")" && pwd)/$(basename "$w")${PYTHONPATH:+:$PYTHONPATH}"; done
  fi
  if [ -f "$wheels/binarized_mnist.npz" ] && [[ " ${args[*]-} " != *" --mnist "* ]]; then
    args+=("--mnist" "$(cd "$wheels" && pwd)/binarized_mnist.npz")
  fi
fi
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
echo "[device_check] $("$PY" --version 2>&1) at $(command -v "$PY"); PYTHONPATH=$PYTHONPATH"
exec "$PY" benchmarks/device_check.py "$out" ${args[@]+"${args[@]}"}
