"""Shared test fixtures (keep minimal), and the suite's XLA settings and timing report.

XLA compiles the suite's programs with LLVM's optimizations off (``--xla_backend_optimization_level=0``,
in this process and, through the environment, in every subprocess run). The models under test are tiny, so
compiling is most of the suite's time and running them is not; the optimization level changes how the
same HLO is lowered to machine code, not what it computes (every assertion passes at both levels:
``JAXVAE_TEST_XLA_OPT=default python -m pytest`` runs the suite with XLA's default level, as users run).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
from pathlib import Path

from runhelpers import RESUME, SLOW_SAVE_ENV, check_ok, run_main  # first: it sets XLA_FLAGS before JAX loads

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxvae.vae.model import VAE  # noqa: E402

# Hypothesis: the default run draws the same examples every time (derandomize), so CI never fails on an
# input that a different draw happened to find; HYPOTHESIS_PROFILE=explore draws new ones, many more of them
# (`HYPOTHESIS_PROFILE=explore python -m pytest -q -k fuzz`), to look for bugs on purpose (a fresh clone's
# random draw found `model.conv_strides=None` crashing validation in CI, 2026-12-06).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", max_examples=30, derandomize=True, database=None)
_hypothesis_settings.register_profile("explore", max_examples=1000, derandomize=False)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SLOW_TEST_S = 30.0  # a test slower than this on the 2-core CI machine belongs behind -m slow (issue 26)


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
    """Linear-Gaussian VAE x = W z + b + N(0, s2 I), z ~ N(0, I), with everything known in closed form.

    W has orthogonal columns, so the exact posterior N(M^{-1} W^T (x - b) / s2, M^{-1}),
    M = I + W^T W / s2, is diagonal and a linear encoder represents it exactly.
    """

    model: VAE
    W: np.ndarray  # (D, d)
    b: np.ndarray  # (D,)
    s2: float
    x: np.ndarray  # (N, D) data points (drawn from the model)

    def params(self, mu_shift: float = 0.0, logvar_shift: float = 0.0) -> dict:
        """Decoder = truth; encoder = exact posterior, optionally perturbed (imperfect encoder)."""
        d = self.W.shape[1]
        m_inv = 1.0 / (1.0 + np.sum(self.W**2, axis=0) / self.s2)  # diag M^{-1}
        k_mu = self.W * m_inv[None, :] / self.s2  # mu = (x - b) @ W M^{-1} / s2
        b_mu = -self.b @ k_mu + mu_shift
        kernel = np.concatenate([k_mu, np.zeros_like(k_mu)], axis=1)
        bias = np.concatenate([b_mu, np.log(m_inv) + logvar_shift * np.ones(d)])
        return {
            "encoder": {"head": {"kernel": jnp.asarray(kernel, jnp.float32),
                                 "bias": jnp.asarray(bias, jnp.float32)}},
            "decoder": {"out": {"kernel": jnp.asarray(self.W.T, jnp.float32),
                                "bias": jnp.asarray(self.b, jnp.float32)}},
        }

    def log_px(self) -> np.ndarray:
        """Exact log p(x) = log N(x; b, W W^T + s2 I), in float64 via Cholesky (independent of jaxvae)."""
        dim = self.W.shape[0]
        cov = self.W @ self.W.T + self.s2 * np.eye(dim)
        chol = np.linalg.cholesky(cov)
        r = np.linalg.solve(chol, (self.x - self.b).T)  # (D, N)
        logdet = 2.0 * np.sum(np.log(np.diag(chol)))
        return -0.5 * (dim * np.log(2 * np.pi) + logdet + np.sum(r**2, axis=0))


@pytest.fixture(scope="session")
def linear_gaussian() -> LinearGaussian:
    rng = np.random.default_rng(0)
    D, d, s2, n = 5, 2, 0.5, 8
    q, _ = np.linalg.qr(rng.normal(size=(D, d)))
    W = q * np.array([1.5, 0.8])  # orthogonal columns with different norms
    b = rng.normal(size=D) * 0.5
    z = rng.normal(size=(n, d))
    x = z @ W.T + b + np.sqrt(s2) * rng.normal(size=(n, D))
    model = VAE(D, d, encoder_hidden=(), decoder_hidden=(), likelihood="gaussian", obs_variance=s2,
                decoder_output_act="identity")
    return LinearGaussian(model, W, b, s2, x.astype(np.float32))


# -- subprocess runs of ``python -m jaxvae.main`` (tests/runhelpers.py) --------------------------------
@pytest.fixture(scope="session")
def run_env(tmp_path_factory) -> dict:
    """The environment of every subprocess run: one persistent JAX compilation cache for the session
    (``JAX_COMPILATION_CACHE_DIR`` under the session's pytest temp dir; ``JAXVAE_TEST_JAX_CACHE``
    overrides it), so only the first run of each shape compiles. The cache holds the same executables an
    uncached run would compile, so it does not change any number. The slow-save test hook is never
    inherited (tests that want it pass ``slow_save`` to ``start_main``)."""
    env = dict(os.environ)
    cache = os.environ.get("JAXVAE_TEST_JAX_CACHE") or str(tmp_path_factory.getbasetemp() / "jax_cache")
    env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env.pop(SLOW_SAVE_ENV, None)
    return env


@pytest.fixture(scope="session")
def resume_reference(run_env, tmp_path_factory) -> Path:
    """The uninterrupted RESUME run (81 steps), once per session: what interrupted-and-resumed runs in
    tests/test_runner.py and tests/test_reliability.py must reproduce exactly (read-only for the tests).

    Under pytest-xdist the workers share it: the first one that needs it runs it in the session's common
    temp folder while holding a file lock; the others wait on the lock and reuse it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder above the workers' own: common to the session's workers
    ref = root / "resume_reference"
    with open(root / "resume_reference.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (ref / "results.json").is_file():
            shutil.rmtree(ref, ignore_errors=True)  # an unfinished earlier attempt
            check_ok(run_main(run_env, ref, *RESUME))
    return ref


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After pytest's own list of the slowest tests (``--durations=15`` in pyproject's addopts): one line per
    test of the default run that took over SLOW_TEST_S, so the suite stays within CI's time (a test that
    needs longer goes behind ``-m slow``, with a smaller sibling that checks the same property)."""
    if "not slow" not in (config.getoption("markexpr", "") or ""):
        return  # a run that includes the slow tests on purpose
    slow = []
    for reports in terminalreporter.stats.values():
        for r in reports:
            if getattr(r, "when", None) in ("setup", "call") and getattr(r, "duration", 0) > SLOW_TEST_S:
                slow.append((r.duration, r.when, r.nodeid))
    if slow:
        terminalreporter.write_sep("=", f"{len(slow)} test phase(s) over {SLOW_TEST_S:.0f} s: move to -m slow "
                                        "with a smaller sibling in the default run")
        for duration, when, nodeid in sorted(slow, reverse=True):
            terminalreporter.write_line(f"{duration:7.1f}s {when:5s} {nodeid}")
