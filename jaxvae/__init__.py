"""jaxvae: VAEs, IWAE bounds and flow posteriors as pure JAX functions."""
