#!/usr/bin/env bash
# Fill device_wheels/ (git-ignored) with what the lent accelerator machine lacks, for
# `benchmarks/device_check.sh OUT --wheels device_wheels` (issue 31, item 4). Run it here, where PyPI is
# reachable; the device machine reaches no registry, so the run tool carries the folder: carry: ["device_wheels"].
#
#   benchmarks/fetch_device_wheels.sh [DIR] [--data FILE]
#
# Wheels: exactly the packages jaxvae imports that the device image ('cuda', python3 3.12; see
# /work/.library/device/KINDS.md) does not hold, as pure-Python wheels downloaded with --no-deps (everything
# they require is in the image): ml-collections, blackjax, tensorboardX (benchmarks/device_env.py's CARRIED,
# checked against this list by tests/test_device_check.py). tensorflow-datasets and array-record are not
# carried: only the TFDS dataset builders need them, and the device check reads binarized MNIST directly.
# Data: binarized_mnist.npz (3.8 MB), from --data FILE or ../shared/data/, so that the K=5000, AIS, bf16 and
# two-layer steps use the real test images (random binary images when absent).
# Prints every file with its size and the total, which must stay far below the 64 MiB a call may carry.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="device_wheels"
data=""
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift ;;
    *) dir="$1" ;;
  esac
  shift
done
WHEELS=(ml-collections==1.1.0 blackjax==1.7.1 tensorboardX==2.6.5)
PY="${PYTHON:-python3}"
mkdir -p "$dir"
rm -f "$dir"/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dir" "${WHEELS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
for w in "${WHEELS[@]}"; do
  name="${w%%==*}"; pattern="$(echo "$name" | tr 'A-Z-' 'a-z_')"
  found=$(ls "$dir" | tr 'A-Z-' 'a-z_' | grep -c "^${pattern}_[0-9]" || true)
  [ "$found" = 1 ] || { echo "expected one wheel of $w in $dir, found $found" >&2; exit 1; }
done
if [ -z "$data" ] && [ -f ../shared/data/binarized_mnist.npz ]; then data=../shared/data/binarized_mnist.npz; fi
if [ -n "$data" ]; then
  cp "$data" "$dir/binarized_mnist.npz"
else
  echo "no binarized_mnist.npz (--data FILE or ../shared/data/): the check will use random binary images" >&2
fi
(cd "$dir" && ls -l | awk 'NR > 1 {printf "%10d  %s\n", $5, $9}')
total=$(du -cb "$dir"/* | tail -1 | cut -f1)
echo "total: $total bytes ($(( total / 1024 / 1024 )) MiB) in $dir (a run carries at most 64 MiB with the working tree)"
