"""What a trained flow posterior does: per-layer planar statistics and the ELBO with the flow switched off.

    python benchmarks/flow_diagnostics.py WORKDIR [--config.model.flow_length=10 ...]

Loads WORKDIR's latest checkpoint (config from experiments/planar_flow_mnist.py plus the overrides given),
and on the first 1000 test images (denser than average: lower ELBOs than the runner's
random 1000-image subset) prints: mean sum_k log|det J_k| per example, per-layer median ||w||,
w.u_hat, |u_hat|, and the ELBO (S = 20 samples) with the learned flow vs the same encoder's q_0 alone.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags  # noqa: F401
from absl import flags

from jaxvae.experiment import building
from jaxvae.experiment import train as T
from jaxvae.experiment.checkpoints import Checkpoints
from jaxvae.vae import flows
from jaxvae.vae import objectives as O

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "experiments/planar_flow_mnist.py")


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    workdir = sys.argv[1]
    FLAGS(["x"] + sys.argv[2:])
    config = FLAGS.config
    data = building.load_data(config)
    model = building.build_model(config, data.train.shape[1])
    schedule, _ = T.learning_rate_schedule(config, T.steps_per_epoch_for(len(data.train), config.train.batch_size))
    tx = T.make_optimizer(config, schedule)
    state = T.create_train_state(model, tx, config.seed, building.output_bias(config, model, data.train))
    restored, step = Checkpoints(workdir, 3).restore_latest(state._asdict())
    params = restored["params"]
    x = jnp.asarray(data.test[:1000], jnp.float32)  # the first 1000 (denser than the runner's random subset)
    post = model.encode(params, x)
    print(f"step {step}")
    if model.has_flow:
        fp = post.flow_params
        if model.flow_name == "planar":
            u_hat = flows.planar_u_hat(fp["u"], fp["w"])
            for k in range(model.flow_length):
                w = fp["w"][k]
                print(f"layer {k}: median |w| {np.median(np.linalg.norm(w, axis=-1)):.3f} "
                      f"w.u_hat {np.median(np.sum(w * u_hat[k], -1)):.3f} |u_hat| "
                      f"{np.median(np.linalg.norm(u_hat[k], axis=-1)):.3f} |b| {np.median(np.abs(fp['b'][k])):.3f}")
        z0 = post.mu + jnp.exp(0.5 * post.logvar) * jax.random.normal(jax.random.key(0), post.mu.shape)
        _, log_det = flows.apply(model.flow_part, fp, z0)
        print(f"sum log|det J| per example: mean {float(log_det.mean()):.3f} sd {float(log_det.std()):.3f}")
        off = model.__class__(**{**model.__dict__, "flow": "none", "flow_length": 0})
        p_off = dict(params)
        p_off["encoder"] = {k: v for k, v in params["encoder"].items() if not k.startswith("flow_")}
        p_off.pop("flow", None)
        e_on = O.elbo_terms(model, params, x, jax.random.key(1), 20, analytic_kl=False)["elbo"].mean()
        e_off = O.elbo_terms(off, p_off, x, jax.random.key(1), 20, analytic_kl=False)["elbo"].mean()
        print(f"ELBO (S=20) with the flow {float(e_on):.3f}, same encoder without it {float(e_off):.3f}")


if __name__ == "__main__":
    main()
