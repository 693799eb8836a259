#!/usr/bin/env bash
# Issue 28's three sweeps into one workdir root, one after the other; run it again to resume (finished runs
# are skipped, unfinished ones resume from their last checkpoint). Needs ../shared/data/binarized_mnist.npz
# (or --config.data.manual_dir pointing at the folder that holds it: set DATA=...).
#   experiments/issue28_claims.sh            # runs/claims (ROOT=... to change)
#   python -m jaxvae.sweeps.report runs/claims/rainforth_static    # and flows_claims, vampprior_claims
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-runs/claims}
DATA=${DATA:-../shared/data}
./launch.sh experiments/flows_claims.py --root "$ROOT" --vectorize 2 --config.data.manual_dir="$DATA"
./launch.sh experiments/vampprior_claims.py --root "$ROOT" --vectorize 2 --config.data.manual_dir="$DATA"
./launch.sh experiments/rainforth_static.py --root "$ROOT" --vectorize 2 --config.train.budget=0.01 \
    --config.data.manual_dir="$DATA"
