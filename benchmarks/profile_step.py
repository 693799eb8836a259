"""Per-operation profile of one fused jaxvae training step (issue 20):

    python benchmarks/profile_step.py BATCH K [TRACE_DIR]

Traces 4 steps of the runner's fused ``make_run_steps`` (IWAE-paper MLP; ELBO when K = 1) with
``jax.profiler``, aggregates the XLA thunks by name (ms per step, calls per step) and writes the compiled
HLO beside the trace (``hlo.txt``) so that each fusion can be looked up.
"""
import argparse
import collections
import glob
import gzip
import json
import tempfile
from pathlib import Path

import jax

import bench
import common
from jaxvae.experiment import train as train_lib

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("batch", type=int)
ap.add_argument("k", type=int, help="importance samples (1: ELBO)")
ap.add_argument("trace_dir", nargs="?", default=None, help="default: a new temporary folder")
args = ap.parse_args()
b, k = args.batch, args.k
out = Path(args.trace_dir) if args.trace_dir else Path(tempfile.mkdtemp(prefix='jaxvae_profile_'))
out.mkdir(parents=True, exist_ok=True)
print(common.machine_line(common.device_info()))
obj = 'elbo' if k == 1 else 'iwae'
cfg = bench.iwae_mnist_config(b, obj, k)
model = bench.make_model()
steps = 4
x = jax.device_put(bench.random_binary(steps * b))
sched, _ = train_lib.learning_rate_schedule(cfg, steps)
tx = train_lib.make_optimizer(cfg, sched)
st = train_lib.create_train_state(model, tx, 0)
run = train_lib.make_run_steps(model, cfg, tx, steps, b)
st, info = run(st, x, steps); jax.block_until_ready(st)
(st, info), wall, _ = common.time_once(lambda: jax.block_until_ready(run(st, x, steps))); print('step', wall / steps)
jax.profiler.start_trace(str(out / 'trace'))
st, info = run(st, x, steps); jax.block_until_ready(st)
jax.profiler.stop_trace()
f = sorted(glob.glob(str(out / 'trace' / '**' / '*.trace.json.gz'), recursive=True))[-1]
tr = json.load(gzip.open(f))
agg = collections.Counter(); cnt = collections.Counter()
for e in tr['traceEvents']:
    if e.get('ph') == 'X' and 'dur' in e:
        agg[e['name']] += e['dur']; cnt[e['name']] += 1
tot = sum(v for n, v in agg.items())
for n, v in agg.most_common(40):
    print(f"{v/steps/1000:9.2f} ms/step {cnt[n]//steps:4d}x  {n[:110]}")
txt = run.lower(st, x, steps).compile().as_text() if hasattr(run, 'lower') else None
(out / 'hlo.txt').write_text(txt or '')
print('trace and hlo.txt in', out)
