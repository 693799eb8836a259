"""The worked 3x3 example's corrected numbers, and the toy VAE's training."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np

from jaxvae import toy


def test_worked_example_values():
    t = toy.worked_example()
    # ||x - mu_theta||^2 = 9 * 0.05^2 = 0.0225; reconstruction = -4.5 log(0.2 pi) - 0.0225 / 0.2
    assert abs(t["squared_error"] - 0.0225) < 1e-6
    rec = -4.5 * math.log(0.2 * math.pi) - 0.0225 / 0.2
    kl = 0.5 * (math.exp(-1.2) + 0.25 - 1 + 1.2 + math.exp(-0.8) + 0.09 - 1 + 0.8)
    assert abs(t["reconstruction"] - rec) < 1e-5 and abs(t["reconstruction"] - 1.979) < 1e-3
    assert abs(t["kl"] - kl) < 1e-5 and abs(t["kl"] - 0.545) < 1e-3
    assert abs(t["elbo"] - (rec - kl)) < 1e-5 and abs(t["elbo"] - 1.434) < 1e-3
    # none of the write-up's numbers
    for name, wrong in toy.WRITEUP_ERRATA.items():
        assert abs(t[name] - wrong) > 0.2


def test_training_raises_the_elbo():
    res = toy.train_toy(seed=0, steps=300)
    assert res["data"].shape == (128, 9) and np.all((res["data"] >= 0) & (res["data"] <= 1))
    # one ELBO evaluation uses 64 samples x 128 images: its Monte Carlo noise is << 1 nat
    assert res["elbo_after"] > res["elbo_before"] + 1.0, (res["elbo_before"], res["elbo_after"])
    assert np.all(np.isfinite(res["losses"]))
    assert res["losses"][-20:].mean() < res["losses"][:20].mean() - 1.0
    assert res["samples"].shape == (4, 3, 3)
    assert np.all((res["samples"] >= 0) & (res["samples"] <= 1))  # sigmoid decoder means
    art = toy.ascii_images(res["samples"])
    assert len(art.splitlines()) == 3


def test_cli_prints_the_corrected_numbers(tmp_path):
    out = tmp_path / "toy.png"
    proc = subprocess.run([sys.executable, "-m", "jaxvae.toy", "--steps", "200", "--out", str(out)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for value in ("1.979", "0.545", "1.434", "0.0225", "can exceed 1"):
        assert value in text, value
    assert "before" in text and "after" in text
    assert out.exists() and out.stat().st_size > 1000
