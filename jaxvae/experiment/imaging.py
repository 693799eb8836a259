"""Results for images: bits per dimension of the NLL estimate when the likelihood is discrete."""

from __future__ import annotations

import math

from jaxvae.vae.likelihoods import bits_per_dim


def bits_per_dim_results(config, model, dataset, test: dict) -> dict:
    """``{"bits_per_dim": ..., "elbo_bits_per_dim": ..., "bits_per_dim_convention": ...}`` or {} .

    bits/dim = -log p(x) / (D ln 2) with D = H W C subpixels, from the NLL estimate (the IWAE bound at the
    largest eval.ks K) and from the ELBO. Only for likelihoods that are probabilities of the data
    themselves: the discretized ones (each 8-bit subpixel k in {0..255}, read as k/255 and mapped to
    2k/255 - 1 in [-1, 1], gets the mass of its bin of width 2/255, end bins open; the 256 masses sum to
    1), and Bernoulli on binary data (values {0, 1}; then it is bits per binary pixel). A density
    (Gaussian) on 8-bit data would need a dequantization bound, which jaxvae does not compute.
    """
    part = model.likelihood_part
    binary = model.likelihood_name == "bernoulli" and (dataset.is_binary or config.data.binarize != "none")
    if not (getattr(part, "discrete", False) or binary) or test.get("nll") is None:
        return {}
    d = int(math.prod(dataset.image_shape))
    return {
        "bits_per_dim": float(bits_per_dim(test["nll"], d)),
        "elbo_bits_per_dim": float(bits_per_dim(-test["elbo"], d)),
        "bits_per_dim_convention": ("binary pixels {0,1}" if binary else
                                    "8-bit: pixel k -> bin [2k/255-1 -+ 1/255] on [-1,1], end bins open"),
    }
