"""A finished (or checkpointed) run, loaded for a notebook: ``jaxvae.load_run(workdir)``.

    run = jaxvae.load_run("runs/quickstart/name=iwae,objective.k=5")
    x = run.test_data()                      # the test examples the run was evaluated on
    post = run.encode(x[:8])                 # q(z|x): mu, logvar (, flow parameters)
    imgs = run.sample(16)                    # E[x|z], z ~ p(z)
    rec = run.reconstruct(x[:8])             # E[x|z] at the posterior mean
    run.bounds(x[:100], ks=(1, 50))          # test ELBO, IWAE_K, active units, ...
    run.log_likelihood(x[:10], k=5000)       # per-example log p(x) estimates (IWAE_5000)
    run.evaluate()                           # results.json's "test" numbers, recomputed (same key)
    run.ais(); run.bdmc(); run.gaps()        # the log p(x) sandwich and the inference-gap split
    run.weight_health(); run.snr(ks=(1, 8, 64))  # ESS/K and k-hat of the weights; gradient SNR against K
    run                                      # in a notebook: a table (name, model, objective, test numbers)

Everything runs through the same pure functions as training and evaluation (``jaxvae.vae``); the
parameters are a plain pytree (``run.params``) and the model a hashable ``VAE`` (``run.model``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

__all__ = ["Run", "load_run", "RunNotFound"]


class RunNotFound(ValueError):
    """The folder is not a jaxvae run, or it holds no checkpoint of the kind asked for."""


@dataclasses.dataclass
class Run:
    """A run's config, model and parameters, with the operations a notebook needs."""

    workdir: Path
    config: ml_collections.ConfigDict
    model: Any
    params: Any
    step: int
    checkpoint: str
    _dataset: Any = None

    # -- data ----------------------------------------------------------------------------------------
    @property
    def dataset(self):
        """The run's dataset (loaded once, as the run loaded it: same splits, same static binarization)."""
        if self._dataset is None:
            from jaxvae.experiment.building import load_data

            self._dataset = load_data(self.config)
        return self._dataset

    def test_data(self) -> np.ndarray:
        """The test examples the run's final evaluation used (eval.max_examples subset included)."""
        from jaxvae.experiment.evaluations import final_eval_spec

        x, _, _, _ = final_eval_spec(self.config, self.dataset)
        return x

    # -- the model -----------------------------------------------------------------------------------
    def encode(self, x):
        """q(z|x) for a batch: a Posterior(mu, logvar, flow_params)."""
        return _jit(_encode, self.model)(self.params, jnp.asarray(x, jnp.float32))

    def sample(self, num: int, key: jax.Array | int = 0) -> np.ndarray:
        """``num`` images E[x|z] for z ~ p(z), shape (num, x_dim)."""
        key = jax.random.key(key) if isinstance(key, int) else key
        z = self.model.sample_prior(self.params, key, num)
        return np.asarray(_jit(_mean_image, self.model)(self.params, z))

    def reconstruct(self, x, key: jax.Array | int | None = None) -> np.ndarray:
        """E[x|z] at the posterior mean (the flow applied to it), or at a posterior sample with ``key``."""
        x = jnp.asarray(x, jnp.float32)
        if key is None:
            return np.asarray(_jit(_reconstruct_mean, self.model)(self.params, x))
        key = jax.random.key(key) if isinstance(key, int) else key
        return np.asarray(_jit(_reconstruct_sample, self.model)(self.params, x, key))

    # -- bounds --------------------------------------------------------------------------------------
    def bounds(self, x, ks: Sequence[int] = (1, 5, 50), key: jax.Array | int = 0, *, surgery: bool = False,
               binarize: str = "none") -> dict:
        """Mean test ELBO, IWAE_K for each K, NLL (at the largest K), active units over ``x``, exactly as
        the run's evaluation computes them (``eval_driver.evaluate_split``)."""
        from jaxvae.experiment.eval_driver import evaluate_split

        key = jax.random.key(key) if isinstance(key, int) else key
        out = evaluate_split(self.model, self.params, np.asarray(x, np.float32), key, ks=tuple(ks),
                             batch_size=self.config.eval.batch_size, chunk_size=self.config.eval.chunk_size,
                             binarize=binarize, surgery=surgery)
        out.pop("seconds", None)
        return out

    def log_likelihood(self, x, k: int = 5000, key: jax.Array | int = 0, chunk_size: int | None = None
                       ) -> np.ndarray:
        """Per-example log p(x) estimates: the IWAE_k bound (k = 5000 by default), drawn in chunks so
        that memory stays O(chunk x batch)."""
        from jaxvae.vae.evaluation import iwae_bound_chunked

        key = jax.random.key(key) if isinstance(key, int) else key
        chunk = chunk_size or self.config.eval.chunk_size
        fn = jax.jit(iwae_bound_chunked, static_argnums=(0, 4, 5))
        x = np.asarray(x, np.float32)
        bs = self.config.eval.batch_size
        out = [np.asarray(fn(self.model, self.params, jnp.asarray(x[i:i + bs]), jax.random.fold_in(key, i),
                             int(k), int(chunk))) for i in range(0, len(x), bs)]
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    def evaluate(self, names=None) -> dict:
        """The run's final test evaluation, recomputed by the same registered evaluations
        (``jaxvae.experiment.evaluations``) with the same examples, keys and settings: with the checkpoint of
        the last step it equals results.json's "test" entry. Evaluations that write files (pictures) are left
        out; ``names``: only these registered evaluations. Entries that results.json keeps elsewhere (e.g.
        "train_set") are added under their names."""
        from jaxvae.experiment import evaluations as ev

        chosen = ev.evaluations_for(self.config, self.model, files=False)
        if names is not None:
            unknown = sorted(set(names) - set(ev.EVALUATIONS))
            if unknown:
                raise ValueError(f"unknown evaluations {unknown}; registered: {sorted(ev.EVALUATIONS)}")
            chosen = [e for e in chosen if e.name in names]
        test, other = ev.run_evaluations(self.config, self.model, self.params, self.dataset, None,
                                         evaluations=chosen)
        test.pop("seconds", None)
        return {**test, **other}

    def results(self) -> dict | None:
        """results.json of the run (None while it is unfinished)."""
        path = self.workdir / "results.json"
        return json.loads(path.read_text()) if path.exists() else None

    # -- the log p(x) sandwich and the diagnostics (jaxvae.experiment.run_diagnostics; docs/ais.md) -------
    # Defaults: the config's eval.* settings and the run's own keys, so that on the examples the run used
    # they give results.json's test.ais / test.bdmc / test.gaps / test.ess / test.pareto_k numbers.
    def eval_examples(self) -> np.ndarray:
        """``test_data()`` as the final evaluation scored it: binarized once with the evaluation's seed when
        data.binarize is dynamic (what ``ais``, ``gaps`` and ``weight_health`` draw their defaults from)."""
        from jaxvae.experiment.run_diagnostics import eval_examples

        return eval_examples(self)

    def ais(self, x=None, *, num_steps: int | None = None, chains: int | None = None, init: str | None = None,
            key: jax.Array | int | None = None, iwae_k: int | None = None, **settings):
        """AIS estimates of log p(x) (stochastic lower bounds; Neal 2001, Wu et al. 2017) and IWAE_iwae_k on the
        same examples: an ``AISEstimate`` (per-example ``log_px``, ``iwae``, ``acceptance``; ``mean``,
        ``stderr``; ``entry``: results.json's form).

        ``x``: examples as the model scores them (binarized; default: the first eval.ais.examples of
        ``eval_examples()``, 100 when that is 0). ``num_steps`` (T), ``chains``, ``init`` ("encoder" |
        "prior") and ``settings`` (leapfrog_steps, schedule, step_size, target_accept, adapt_rate, batch_size):
        default eval.ais.*. ``iwae_k``: default the largest eval.ks. ``key``: default the run's own."""
        from jaxvae.experiment.run_diagnostics import run_ais

        return run_ais(self, x, key=key, iwae_k=iwae_k, num_steps=num_steps, chains=chains, init=init, **settings)

    def bdmc(self, n: int | None = None, *, num_steps: int | None = None, chains: int | None = None,
             init: str | None = None, key: jax.Array | int | None = None, iwae_k: int | None = None, **settings):
        """BDMC (Grosse et al. 2015) on ``n`` examples simulated from the model: forward-AIS lower and
        reverse-AIS upper bounds of each one's log p(x), a ``BDMCInterval`` (per-example ``lower``, ``upper``,
        ``width``, the simulated ``x``; ``mean``/``stderr`` of the width). Defaults: eval.bdmc.* (``n``: its
        examples, 100 when 0); HMC settings (``settings``: leapfrog_steps, batch_size) from eval.ais."""
        from jaxvae.experiment.run_diagnostics import run_bdmc

        return run_bdmc(self, n, key=key, iwae_k=iwae_k, num_steps=num_steps, chains=chains, init=init, **settings)

    def gaps(self, x=None, *, log_px=None, key: jax.Array | int | None = None, iwae_k: int | None = None,
             **settings):
        """The inference gap log p(x) - ELBO split into approximation and amortization parts (Cremer et al.
        2018): an ``InferenceGaps`` (per-example ``approximation_gap``, ``amortization_gap``, ``inference_gap``,
        ``elbo_optimal``, ...). ``x``: default the first eval.gaps.examples of ``eval_examples()`` (100 when
        0). ``log_px``: an ``AISEstimate`` covering x (e.g. ``run.ais(x)``), per-example values, "iwae"
        (IWAE at ``iwae_k``, default the largest eval.ks), or None: as the run's evaluation does, AIS with
        the run's settings when eval.ais.examples covers x, else IWAE. ``settings``: eval.gaps.* (samples,
        eval_samples, learning_rate, max_steps, check_every, tol, batch_size)."""
        from jaxvae.experiment.run_diagnostics import run_gaps

        return run_gaps(self, x, log_px=log_px, key=key, iwae_k=iwae_k, **settings)

    def weight_health(self, x=None, k: int | None = None, *, key: jax.Array | int | None = None):
        """The importance weights of IWAE_k per example: ESS/K and PSIS Pareto k-hat (k >= 21), a
        ``WeightHealth``. Defaults (x: ``eval_examples()``, k: the largest eval.ks, key: the test key) draw
        the weights of the run's own evaluation, so ``entry`` equals results.json's test "ess" and
        "pareto_k"."""
        from jaxvae.experiment.run_diagnostics import run_weight_health

        return run_weight_health(self, x, k, key=key)

    def snr(self, x=None, ks: Sequence[int] = (1, 4, 16, 64, 256),
            estimators: Sequence[str] = ("iwae", "iwae_dreg", "miwae", "piwae", "ciwae", "rws"), *,
            num_draws: int = 100, key: jax.Array | int = 0, **options):
        """Gradient signal-to-noise ratio against K per estimator (Rainforth et al. 2018), as
        ``python -m jaxvae.diagnose`` computes it (same defaults; with x None, the same batch: the first
        ``batch`` = 20 test examples binarized with the seed ``key``): a ``GradientSNR`` (``table``,
        ``curve(estimator, network)``). ``options``: m, beta_ciwae, chunk, batch."""
        from jaxvae.experiment.run_diagnostics import run_snr

        return run_snr(self, x, ks, estimators, num_draws=num_draws, key=key, **options)

    # -- display -------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        from jaxvae.experiment.run_diagnostics import run_text

        return run_text(self)

    def _repr_html_(self) -> str:
        """A notebook shows a run as a table: name, model, objective, status, results.json's test numbers."""
        from jaxvae.experiment.run_diagnostics import run_html

        return run_html(self)


def _encode(model, params, x):
    return model.encode(params, x)


def _mean_image(model, params, z):
    return model.mean_image(params, z)


def _reconstruct_mean(model, params, x):
    from jaxvae.vae import flows

    post = model.encode(params, x)
    z = post.mu
    if model.has_flow:
        z, _ = flows.apply(model.flow, post.flow_params, z)
    return model.mean_image(params, z)


def _reconstruct_sample(model, params, x, key):
    z, _, _ = model.sample_posterior(model.encode(params, x), key)
    return model.mean_image(params, z)


def _jit(fn, model):
    import functools

    return jax.jit(functools.partial(fn, model))


def _read_config(workdir: Path) -> ml_collections.ConfigDict:
    """The run's config: results.json's full config when finished, else config.json (the fields that
    define the model and training) over the defaults; the flat fields of older runs in their new place
    (``configs.upgrade_config_dict``)."""
    from jaxvae.experiment.configs import base_config, flatten, upgrade_config_dict
    from jaxvae.experiment.validation import override

    results = workdir / "results.json"
    saved = None
    if results.exists():
        saved = json.loads(results.read_text()).get("config")
    if saved is None and (workdir / "config.json").exists():
        saved = json.loads((workdir / "config.json").read_text())
    if saved is None:
        raise RunNotFound(f"{workdir} is not a jaxvae run (no results.json or config.json); pass the --workdir "
                          "of a run")
    flat = {k: (tuple(v) if isinstance(v, list) else v) for k, v in flatten(upgrade_config_dict(saved)).items()}
    return override(base_config(), flat)


def _import_experiment(path: str | Path) -> None:
    """Executes an experiment file (it may register custom objectives, priors, flows)."""
    spec = importlib.util.spec_from_file_location(f"jaxvae_experiment_{Path(path).stem}", str(path))
    if spec is None or spec.loader is None:
        raise RunNotFound(f"cannot import the experiment file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def load_run(workdir: str | Path, checkpoint: str = "best", *, experiment: str | Path | None = None) -> Run:
    """Loads a run's config, model and parameters from its workdir.

    ``checkpoint``: "best" (the best validation bound; falls back to "latest" when the run kept none) or
    "latest" (the last saved step: for a finished run, the parameters its final evaluation used).
    ``experiment``: the experiment file, when it registers custom parts (objectives, priors, flows) that
    ``config.imports`` does not name.
    """
    from jaxvae.experiment import train as train_lib
    from jaxvae.experiment.checkpoints import Checkpoints
    from jaxvae.experiment.building import build_model, load_data
    from jaxvae.experiment.validation import import_modules

    workdir = Path(workdir)
    if checkpoint not in ("best", "latest"):
        raise ValueError(f"checkpoint={checkpoint!r}: choose 'best' or 'latest'")
    if not workdir.is_dir():
        raise RunNotFound(f"no folder {workdir}")
    if experiment is not None:
        _import_experiment(experiment)
    config = _read_config(workdir)
    problems = import_modules(config.imports)
    if problems:
        raise RunNotFound("; ".join(problems))
    dataset = load_data(config)  # the input size, and what test_data()/evaluate() use
    model = build_model(config, int(dataset.train.shape[1]), dataset.image_shape)
    schedule, _ = train_lib.learning_rate_schedule(config, 1)
    tx = train_lib.make_optimizer(config, schedule)
    template = train_lib.create_train_state(model, tx, config.seed)._asdict()
    ckpts = Checkpoints(workdir, config.train.keep_checkpoints)
    try:
        restored, step, which = None, None, checkpoint
        if checkpoint == "best":
            restored, step = ckpts.restore_best(template)
            if restored is None:
                which = "latest"
        if restored is None:
            step = ckpts.latest.latest_step()
            if step is None:
                raise RunNotFound(f"{workdir} has no checkpoint yet (checkpoints/latest is empty)")
            restored = Checkpoints.restore_step(ckpts.latest, template, step)
    finally:
        ckpts.close()
    params = jax.tree_util.tree_map(jnp.asarray, restored["params"])
    return Run(workdir, config, model, params, int(step), which, dataset)
