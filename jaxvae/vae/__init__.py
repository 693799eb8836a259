"""The mathematics of VAEs: distributions, flows, networks, the model, objectives and estimators of log p(x).

Pure functions of parameter pytrees; imports nothing from jaxvae.experiment or jaxvae.sweeps.
"""
