#!/usr/bin/env bash
# Issue 28's sweeps into one workdir root, one after the other; run it again to resume (finished runs
# are skipped, unfinished ones resume from their last checkpoint). Needs ../shared/data/binarized_mnist.npz
# (or --config.data.manual_dir pointing at the folder that holds it: set DATA=...).
#   experiments/issue28_claims.sh            # runs/claims (ROOT=... to change)
#   python -m jaxvae.sweeps.report runs/claims/rainforth_static    # and the other folders of runs/claims
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-runs/claims}
DATA=${DATA:-../shared/data}
./launch.sh experiments/flows_claims.py --root "$ROOT" --vectorize 2 --config.data.manual_dir="$DATA"
./launch.sh experiments/vampprior_claims.py --root "$ROOT" --vectorize 2 --config.data.manual_dir="$DATA"
# The gradient SNR at the end of training of every finished Rainforth run (its own estimator, IWAE and
# IWAE-DReG at K = 1, 8, 64; MIWAE/PIWAE as 8 groups of 8 at K=64), into each run's snr_best.json: the
# report's "Objectives compared" table reads them.
diagnose_finished() {
    for wd in "$ROOT"/rainforth_static/*/; do
        [ -f "$wd/results.json" ] && [ ! -f "$wd/snr_best.json" ] || continue
        own=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['objective']['name'])" "$wd/config.json")
        python -m jaxvae.diagnose "$wd" --ks 1,8,64 --m 8 \
            --estimators "$(echo "$own,iwae,iwae_dreg" | tr , '\n' | awk '!s[$0]++' | paste -sd,)"
    done
}
rainforth() {  # the Rainforth runs $1 (indices from --list; "" for all, then the report), then their SNR
    ./launch.sh experiments/rainforth_static.py --root "$ROOT" --vectorize 2 --config.train.budget=0.01 \
        --config.data.manual_dir="$DATA" ${1:+--only "$1"} ${1:+--no-report}
    diagnose_finished
}
# The Rainforth pairs in the order the claims need them (MIWAE, then VAE(64), PIWAE, DReG, CIWAE; --list
# gives the indices), the equal-compute runs of the flows and the VampPrior after the first; then the
# whole sweep, which skips what finished and prints its report.
rainforth 2,3
./launch.sh experiments/flows_equal_compute.py --root "$ROOT" --vectorize 2 --config.data.manual_dir="$DATA"
./launch.sh experiments/vampprior_equal_compute.py --root "$ROOT" --vectorize 2 --config.data.manual_dir="$DATA"
for pair in 8,9 4,5 10,11 6,7 ""; do
    rainforth "$pair"
done
python -m jaxvae.sweeps.report "$ROOT/rainforth_static"
# AIS beside IWAE_5000 on the first 200 test images of every Rainforth run (skips runs that have it)
python benchmarks/issue28_ais.py "$ROOT/rainforth_static" --examples 200 --steps 1000 --chains 8
python -m jaxvae.sweeps.report "$ROOT/flows_claims"
python -m jaxvae.sweeps.report "$ROOT/vampprior_claims"
python -m jaxvae.sweeps.report "$ROOT/flows_equal_compute"
python -m jaxvae.sweeps.report "$ROOT/vampprior_equal_compute"
