"""The experiment layer: config and validation, the training loop, evaluation driver, checkpoints,
metrics, pictures, devices and vectorized groups (what ``python -m jaxvae.main`` runs)."""
