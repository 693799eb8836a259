"""Burda, Grosse & Salakhutdinov (2015), Table 1: VAE vs IWAE, k = 1/5/50, one and two stochastic layers,
dynamically binarized MNIST and 28x28 Omniglot (20 distinct runs; VAE k=1 and IWAE k=1 are the same model,
run once as ``objective.name=elbo, k=1``), seeds as a vectorizable axis.

Architectures (tanh): one layer 784-200-200-50 (q) and 50-200-200-784 (p); two layers
x -> [200, 200] -> z_1 (100) -> [100, 100] -> z_2 (50) for q and z_2 -> [100, 100] -> z_1 -> [200, 200] -> x
for p (``model.stochastic_layers=2``, ``model.latent_dims=(100, 50)``, ``model.upper_hidden=(100, 100)``).
Adam(0.9, 0.999, eps=1e-4), batch 20, 3^i passes at learning rate 1e-3 * 10^(-i/7), i = 0..7 (3280 passes;
``train.budget`` scales them). Data: MNIST's 60000 training images with the last 400 held out for
validation, binarized afresh each batch, the test set binarized once with a fixed seed
(``eval.binarize_seed=0``); Omniglot's chardata.mat (23000 / 1345 / 8070, dynamically binarized, the test
set likewise). NLL = -IWAE_5000 on the test set; the train-set bounds on 1000 fixed training images give
the train/test gap. ``python -m jaxvae.sweeps.report runs/iwae_table1`` lays the results out like the
paper's Table 1 (jaxvae/sweeps/papers/burda2015_table1.json).

    ./launch.sh experiments/iwae_table1.py --vectorize 2 --config.train.budget=0.01
"""

from jaxvae.experiment.configs import iwae_paper_config

SEEDS = (0, 1)
# dataset-level settings: (data.name, data.valid_size) - MNIST has no validation split of its own
DATASETS = (("mnist", 400), ("omniglot", 0))
LAYERS = ((1, ()), (2, (100, 50)))  # (model.stochastic_layers, model.latent_dims)
OBJECTIVES = (("elbo", 1), ("elbo", 5), ("elbo", 50), ("iwae", 5), ("iwae", 50))


def get_config():
    c = iwae_paper_config()  # the paper's model, optimizer, schedule and evaluation
    c.name = "iwae_table1"
    c.data.name = "mnist"
    c.data.binarize = "dynamic"
    c.data.valid_size = 400
    c.model.upper_hidden = (100, 100)
    c.objective.k = 5
    c.eval.binarize_seed = 0  # one fixed binarization of the test set for every run (as the paper)
    c.eval.train_examples = 1000  # train-set NLL on 1000 fixed training images: the train/test gap
    return c


def table1_points(seeds=SEEDS):
    """The 20 distinct (dataset, layers, objective, k) cells, each for every seed (seed varies fastest)."""
    points = []
    for name, valid_size in DATASETS:
        for layers, dims in LAYERS:
            for obj, k in OBJECTIVES:
                for seed in seeds:
                    points.append({"data.name": name, "data.valid_size": valid_size,
                                   "model.stochastic_layers": layers, "model.latent_dims": dims,
                                   "objective.name": obj, "objective.k": k, "seed": seed})
    return points


def get_sweep():
    return table1_points()
