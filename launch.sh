#!/usr/bin/env bash
# Launch an experiment's sweep: ./launch.sh experiments/iwae_mnist.py [flags] [--config.x=y ...]
# A thin wrapper around `python -m jaxvae.sweeps` (all logic lives there; see --help). Paths are relative
# to the caller's cwd. Uses $PYTHON, else the `python` of the active environment.
set -euo pipefail
exec "${PYTHON:-python}" -m jaxvae.sweeps "$@"
