"""Per-operation profile of one fused jaxvae training step (issue 20):

    python benchmarks/profile_step.py BATCH K [TRACE_DIR]

Traces 4 steps of the runner's fused ``make_run_steps`` (IWAE-paper MLP; ELBO when K = 1) with
``jax.profiler``, aggregates the XLA thunks by name (ms per step, calls per step) and writes the compiled
HLO beside the trace (``hlo.txt``) so that each fusion can be looked up.
"""
import collections
import glob
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE)); sys.path.insert(0, str(HERE.parent))
import jax  # noqa: E402

import bench  # noqa: E402
from jaxvae.experiment import train as train_lib  # noqa: E402

b, k = int(sys.argv[1]), int(sys.argv[2])
out = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(tempfile.mkdtemp(prefix='jaxvae_profile_'))
out.mkdir(parents=True, exist_ok=True)
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
t = time.perf_counter(); st, info = run(st, x, steps); jax.block_until_ready(st); print('step', (time.perf_counter()-t)/steps)
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
