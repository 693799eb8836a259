# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # jaxvae in a notebook: bounds, the log p(x) sandwich and the inference gaps
#
# This notebook trains VAEs from Python and asks the questions the library is for: how much does the
# IWAE bound gain over the ELBO as K grows, how far is the bound from log p(x), how much of the gap is
# the posterior family's and how much the amortized encoder's, and are the importance weights and the
# gradients healthy. It ends by registering a new bound in a few lines and training with it.
#
# **The budgets here are tiny**, so that the test suite can execute this notebook top to bottom in
# under a minute on a 2-core CPU (`tests/test_tutorial.py`): small networks, 20 epochs, 100 test
# examples, K up to 500 in the run's own evaluation, AIS with 50 annealing steps on 10 examples. The
# numbers are real (every printed number is computed by the cell that prints it) but they describe
# briefly trained models. To scale up, use the settings of `experiments/quickstart.py` (two hidden layers
# of 128, 150 epochs, `eval.ks = (1, 5, 50, 1000)`, every test example) or a paper config
# (`jaxvae.experiment.configs.iwae_paper_config`), and the documented defaults of `eval.ais`
# (1000 steps, 16 chains), `eval.bdmc` and `eval.gaps` (`docs/ais.md`): each line marked
# `# tiny` below says what to change.
#
# Everything the cells call is public API (`docs/api.md`): `jaxvae.base_config`,
# `jaxvae.train_and_evaluate`, `jaxvae.load_run` and the methods of the `Run` it returns.

# %%
# %matplotlib inline
import shutil
import time
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np

import jaxvae

started = time.time()
ROOT = Path("runs/tutorial")  # relative to the notebook's folder; every execution starts afresh
shutil.rmtree(ROOT, ignore_errors=True)
print("jax", jax.__version__, "on", jax.devices()[0].platform)

# %% [markdown]
# ## 1. Train an ELBO model and an IWAE(K=5) model
#
# A config is an `ml_collections.ConfigDict`; `jaxvae.base_config()` documents every field
# (`jaxvae/experiment/configs.py`). The data are scikit-learn's 8x8 digits, embedded in the package (no
# download), binarized afresh every batch. The final evaluation of each run also computes an AIS
# estimate of log p(x) and the inference-gap split (`eval.ais`, `eval.gaps`; off by default, as is the
# BDMC interval of `eval.bdmc`) and writes everything to `results.json`.

# %%
def tutorial_config(name, objective, k):
    c = jaxvae.base_config()
    c.name = name
    c.data.name = "digits"
    c.data.binarize = "dynamic"
    c.model.latent_dim = 4                                          # tiny (quickstart: 8)
    c.model.encoder_hidden = c.model.decoder_hidden = (64,)         # tiny (quickstart: (128, 128))
    c.objective.name, c.objective.k = objective, k
    c.train.batch_size = 50
    c.train.num_epochs = 20                                         # tiny (quickstart: 150)
    c.train.learning_rate = 3e-3
    c.train.eval_every_epochs = 0                                   # validate once, at the end
    c.train.checkpoint_every_epochs = 0                             # and checkpoint once (default: every epoch)
    c.eval.ks = (1, 5, 50, 500)                                     # tiny (papers: (1, 5, 50, 5000))
    c.eval.max_examples = 100                                       # tiny (0 = every test example)
    c.eval.valid_examples, c.eval.valid_k = 100, 5
    c.eval.images = False                                           # no PNGs in the workdir
    c.eval.ais.update(examples=10, num_steps=50, chains=4, batch_size=10)   # tiny (1000 steps, 16 chains)
    c.eval.gaps.update(examples=10, max_steps=200, check_every=50, eval_samples=100, batch_size=10)  # tiny
    return c


for name, objective, k in [("elbo", "elbo", 1), ("iwae", "iwae", 5)]:
    t0 = time.time()
    results = jaxvae.train_and_evaluate(tutorial_config(name, objective, k), ROOT / name, log=lambda line: None)
    t = results["test"]
    print(f"{name}: {results['train']['steps']} steps in {time.time() - t0:.1f} s; test ELBO {t['elbo']:.3f}, "
          f"IWAE_500 {t['iwae']['500']:.3f}")

# %% [markdown]
# ## 2. Load them
#
# `jaxvae.load_run(workdir)` reads the config, builds the model and restores the parameters of the best
# checkpoint by the validation bound (here the last one: these runs validated only at their end). In a
# notebook a run shows itself as a table of its test numbers.

# %%
runs = {name: jaxvae.load_run(ROOT / name) for name in ("elbo", "iwae")}
runs["iwae"]

# %%
print(runs["elbo"])

# %% [markdown]
# ## 3. The bound against K
#
# `run.bounds(x, ks)` evaluates the ELBO and IWAE_K on any examples with the evaluation's own code.
# `run.eval_examples()` are the test examples exactly as the final evaluation scored them (binarized
# once, with the evaluation's seed). IWAE_K increases with K (Burda et al. 2015), up to Monte Carlo
# noise (each K draws its own samples); the IWAE-trained model should gain more from large K, since it
# was trained for it.

# %%
x = runs["elbo"].eval_examples()
ks = (1, 5, 50, 500)                                   # tiny: e.g. (1, 2, 5, 10, 50, 500, 5000)
curves = {name: run.bounds(x, ks=ks) for name, run in runs.items()}
fig, ax = plt.subplots(figsize=(5, 3.2))
for name, b in curves.items():
    ax.plot(ks, [b["iwae"][str(k)] for k in ks], marker="o", label=f"trained with {name}")
ax.set_xscale("log")
ax.set_xlabel("K (importance samples)")
ax.set_ylabel("test IWAE_K (nats)")
ax.set_title(f"{len(x)} test digits")
ax.legend()
plt.show()
for name, b in curves.items():
    print(f"{name}: ELBO {b['elbo']:.3f}  " + "  ".join(f"IWAE_{k} {b['iwae'][str(k)]:.3f}" for k in ks))

# %% [markdown]
# ## 4. Sandwich log p(x): AIS against IWAE_5000
#
# Annealed importance sampling (`run.ais`) moves the encoder's samples through T intermediate
# distributions towards the posterior with HMC: a stochastic lower bound of log p(x) that becomes tight
# as T grows, and tighter than IWAE for the same cost when q(z|x) is poor. With no arguments it uses the
# run's `eval.ais` settings, examples and PRNG key, so its numbers are results.json's. (To bracket
# log p(x) from above too, `run.bdmc(n)` runs BDMC on n examples simulated from the model, where an exact
# posterior sample is known: the width of its interval says whether T is large enough.)

# %%
run = runs["iwae"]
a = run.ais()                                     # eval.ais: the first 10 test examples, T=50, 4 chains
print(a)
without_seconds = lambda d: {k: v for k, v in d.items() if not k.startswith("seconds")}  # noqa: E731
print("equals results.json's test.ais:", without_seconds(a.entry) == without_seconds(run.results()["test"]["ais"]))
x_ais = x[:len(a.log_px)]                         # the same examples
a_long = run.ais(x_ais, num_steps=200)            # a longer annealing schedule
ladder = {k: run.log_likelihood(x_ais, k=k) for k in (5, 50, 500, 5000)}  # per-example IWAE_K
print(f"IWAE_5000 {ladder[5000].mean():.3f}   AIS T=50 {a.mean:.3f} ± {a.stderr:.3f}   "
      f"AIS T=200 {a_long.mean:.3f} ± {a_long.stderr:.3f}")
print(f"AIS(T=200) - IWAE_5000 = {np.mean(a_long.log_px - ladder[5000]):.3f} nats")

# %% [markdown]
# A short schedule can leave AIS below IWAE_5000; a longer one (the default of `eval.ais.num_steps` is
# 1000) makes it the tighter bound. How far IWAE_5000 sits below log p(x) grows with the latent
# dimension and with how poorly q(z|x) fits the posterior: this model has 4 latent dimensions;
# `docs/ais.md` shows the same picture for MNIST models.

# %%
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(list(ladder), [v.mean() for v in ladder.values()], marker="o", label="IWAE_K")
for est, style in ((a, ":"), (a_long, "--")):
    ax.axhline(est.mean, ls=style, color="k", label=f"AIS, T={est.entry['num_steps']}")
ax.set_xscale("log")
ax.set_xlabel("K")
ax.set_ylabel("mean log p(x) estimate (nats)")
ax.set_title(f"{len(x_ais)} test digits, IWAE(K=5) model")
ax.legend()
plt.show()

# %% [markdown]
# ## 5. The inference gap: approximation against amortization
#
# log p(x) - ELBO[q_phi(z|x)] splits into the **approximation gap** log p(x) - ELBO[q*] (q*: the best
# Gaussian for this x, optimised per example) and the **amortization gap** ELBO[q*] - ELBO[q_phi]
# (what the shared encoder loses against q*; Cremer, Li & Duvenaud 2018). `run.gaps` takes log p(x)
# from an AIS estimate (here the one above: the run's own evaluation does the same).

# %%
gaps = {}
for name, r in runs.items():
    est = a if name == "iwae" else r.ais()
    gaps[name] = r.gaps(log_px=est)
    print(f"{name:5s}", gaps[name])
fig, ax = plt.subplots(figsize=(5, 3))
names = list(gaps)
approx = [gaps[n].mean_stderr("approximation_gap")[0] for n in names]
amort = [gaps[n].mean_stderr("amortization_gap")[0] for n in names]
ax.bar(names, approx, label="approximation gap")
ax.bar(names, amort, bottom=approx, label="amortization gap")
ax.set_ylabel("nats")
ax.set_title("log p(x) - ELBO, split")
ax.legend()
plt.show()

# %% [markdown]
# ## 6. Are the importance weights and the gradients healthy?
#
# `run.weight_health(x, k)` gives per-example ESS/K, the effective sample size of the K weights as a
# fraction (1: q(z|x) is the posterior, 1/K: one weight dominates), and the PSIS Pareto k-hat of their
# upper tail (above 0.7 the weights are heavy-tailed and IWAE_K is unreliable; Vehtari et al.). With no
# arguments it reproduces results.json's test "ess" and "pareto_k".
#
# `run.snr(ks=..., estimators=...)` measures the gradient signal-to-noise ratio of each estimator against
# K (Rainforth et al. 2018): for the IWAE gradient the encoder's SNR falls as K grows (like 1/sqrt(K)),
# which is what the doubly reparameterized gradient (`iwae_dreg`, Tucker et al. 2018) repairs; the
# decoder's SNR grows with K for both (DReG changes only the encoder's gradient). With 20 gradient draws
# the estimates are rough (the command line `python -m jaxvae.diagnose WORKDIR` draws 100).

# %%
health = {name: r.weight_health() for name, r in runs.items()}
for name, w in health.items():
    test = runs[name].results()["test"]
    print(f"{name:5s}", w, "| equals results.json:", w.entry == {"ess": test["ess"], "pareto_k": test["pareto_k"]})
fig, ax = plt.subplots(figsize=(5, 3))
ax.hist([w.khat for w in health.values()], bins=15, label=list(health))
ax.axvline(0.7, color="k", ls="--")
ax.set_xlabel("Pareto k-hat of the K=500 weights, per test example")
ax.legend()
plt.show()

# %%
# tiny: the defaults are ks=(1, 4, 16, 64, 256), all six estimators of `python -m jaxvae.diagnose`, 100 draws
snr = runs["iwae"].snr(ks=(1, 16), estimators=("iwae", "iwae_dreg"), num_draws=20)
print(snr)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for ax, network in zip(axes, ("encoder", "decoder")):
    for estimator in snr.estimators:
        ax.plot(*snr.curve(estimator, network), marker="o", label=estimator)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("K")
    ax.set_title(f"{network}: gradient SNR")
axes[0].legend()
plt.show()

# %% [markdown]
# ## 7. Samples and a latent traversal
#
# `run.sample(n)` decodes draws from the prior; `run.encode(x)` gives q(z|x), and the decoder is a pure
# function of the parameters (`run.model.mean_image(run.params, z)`), so a traversal is a few lines:
# move one latent coordinate of an example's posterior mean and decode.

# %%
shape = run.dataset.image_shape[:2]
samples = run.sample(16, key=0)
z0 = np.asarray(run.encode(x[:1]).mu)[0]
steps = np.linspace(-2.5, 2.5, 8)
traversal = [[run.model.mean_image(run.params, np.asarray([z0 + v * np.eye(len(z0))[d]]))[0] for v in steps]
             for d in range(len(z0))]
fig, axes = plt.subplots(1 + len(z0), 8, figsize=(6, 0.8 * (1 + len(z0))))
for i, ax in enumerate(axes[0]):
    ax.imshow(np.asarray(samples[i]).reshape(shape), cmap="gray_r")
for d, row in enumerate(traversal):
    for ax, img in zip(axes[d + 1], row):
        ax.imshow(np.asarray(img).reshape(shape), cmap="gray_r")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 0].set_ylabel("samples", fontsize=7)
for d in range(len(z0)):
    axes[d + 1, 0].set_ylabel(f"z[{d}]", fontsize=7)
plt.show()

# %% [markdown]
# ## 8. A bound of your own
#
# An objective is a function `(model, params, x, key, **options) -> (loss, metrics)` registered under a
# name (`docs/extending.md`). Here the Rényi / variational Rényi bound of Li & Turner (2016),
# L_alpha = 1/(1-alpha) log mean_k w_k^(1-alpha), which moves between the IWAE bound (alpha = 0) and the
# ELBO (alpha -> 1). Its options come from `objective.k` and `objective.options`.

# %%
import math


@jaxvae.register_objective("renyi", override=True)  # override: the cell may run again
def renyi_bound(model, params, x, key, *, k=5, alpha=0.5, **_):
    post = model.encode(params, x)

    def log_w(key):
        z, log_q, _ = model.sample_posterior(post, key)  # the same z is decoded and scored
        return model.log_joint(params, x, z) - log_q

    lw = jax.vmap(log_w)(jax.random.split(key, k))
    bound = (jax.nn.logsumexp((1 - alpha) * lw, 0) - math.log(k)) / (1 - alpha)
    return -bound.mean(), {"renyi": bound.mean()}


config = tutorial_config("renyi", "renyi", 5)
config.objective.options.alpha = 0.5
config.eval.ais.examples = config.eval.bdmc.examples = config.eval.gaps.examples = 0  # bounds only
jaxvae.train_and_evaluate(config, ROOT / "renyi", log=lambda line: None)
runs["renyi"] = jaxvae.load_run(ROOT / "renyi")
runs["renyi"]

# %%
for name, r in runs.items():
    t = r.results()["test"]
    print(f"{name:6s} ELBO {t['elbo']:8.3f}   IWAE_5 {t['iwae']['5']:8.3f}   IWAE_500 {t['iwae']['500']:8.3f}")
print(f"notebook run time: {time.time() - started:.0f} s")

# %% [markdown]
# ## Where next
#
# - The same from the command line: `./launch.sh experiments/quickstart.py` trains the ELBO and IWAE
#   models as a sweep, and `python -m jaxvae.sweeps.report runs/quickstart` compares them.
# - `docs/ais.md`: AIS, BDMC and the gaps in detail; `docs/tighter_bounds.md`: MIWAE, PIWAE, CIWAE and
#   the gradient SNR (`python -m jaxvae.diagnose`); `docs/extending.md`: priors, flows, likelihoods and
#   evaluations of your own; `docs/api.md`: the Python API.
