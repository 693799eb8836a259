"""Data parallelism on forced CPU devices: 1 device and 4 devices give the same numbers."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(r'''
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jaxvae import parallel, runner, train as T
    from jaxvae.configs import base_config
    from jaxvae.eval_driver import evaluate_split

    assert len(jax.devices()) == 4, jax.devices()
    out = {}
    for nd in (1, 4):
        c = base_config()
        c.model.latent_dim = 4
        c.model.encoder_hidden = (32,)
        c.model.decoder_hidden = (32,)
        c.objective.name = "iwae"
        c.objective.k = 5
        c.train.batch_size = 20
        c.data.binarize = "dynamic"
        ds = runner.load_data(c)
        model = runner.build_model(c, ds.train.shape[1])
        spe = T.steps_per_epoch_for(len(ds.train), c.train.batch_size)
        sched, _ = T.learning_rate_schedule(c, spe)
        tx = T.make_optimizer(c, sched)
        mesh = parallel.make_mesh(nd)
        run_steps = T.make_run_steps(model, c, tx, spe, c.train.batch_size, mesh)
        state = parallel.replicate(T.create_train_state(model, tx, 0), mesh)
        x = parallel.replicate(ds.train, mesh)
        losses = []
        state, info = run_steps(state, x, 1)   # one step
        losses.append(float(info.metrics["loss"]))
        for _ in range(2):                      # a short run: the rest of the epoch, then one more
            state, info = run_steps(state, x, spe - int(state.step) % spe)
            losses.append(float(info.metrics["loss"]))
        assert len(state.params["decoder"]["out"]["bias"].sharding.device_set) == nd
        ev = evaluate_split(model, state.params, ds.test, jax.random.key(1), ks=(1, 50), batch_size=40,
                            mesh=mesh)
        out[nd] = {"losses": losses, "params": [np.asarray(l).tolist() for l in
                   jax.tree_util.tree_leaves(jax.device_get(state.params))], "iwae": ev["iwae"],
                   "elbo": ev["elbo"], "active_units": ev["active_units"]}
    print("RESULT" + json.dumps(out))
''')


def test_four_devices_equal_one_device(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    one, four = out["1"], out["4"]
    # float32 reductions split over 4 devices reorder sums: ~1e-6 relative per step.
    for a, b in zip(one["losses"], four["losses"]):
        assert abs(a - b) <= 1e-4 * abs(a), (one["losses"], four["losses"])
    import numpy as np

    for a, b in zip(one["params"], four["params"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    for k in one["iwae"]:
        assert abs(one["iwae"][k] - four["iwae"][k]) <= 1e-4 * abs(one["iwae"][k])
    assert abs(one["elbo"] - four["elbo"]) <= 1e-4 * abs(one["elbo"])
    assert one["active_units"] == four["active_units"]
