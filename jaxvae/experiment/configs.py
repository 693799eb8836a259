"""The default experiment config: every field any experiment may set, with its one meaning.

Experiment files in ``experiments/`` start from ``base_config()`` and change what they need; any field
can be overridden on the command line (``--config.objective.k=50``). ``flatten`` lists a config's fields by
dotted path (validation, tracking and vectorized groups compare configs that way).
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "run"  # a label for reports
    c.seed = 0  # drives parameter init, data order, posterior samples, dynamic binarization
    c.imports = ()  # modules imported before the run (they may register objectives, priors, flows, ...)

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # digits | toy_3x3 | factors_toy | dsprites | binarized_mnist | mnist | fashion_mnist |
    # cifar10 | tfds:<name>
    c.data.data_dir = ""  # TFDS data dir; "" = $JAXVAE_DATA_DIR or ~/tensorflow_datasets
    c.data.manual_dir = ""  # folder holding the standard files (IDX .gz, .amat, .npz, cifar-10-python.tar.gz)
    c.data.download = True  # allow downloading the standard files when manual_dir is empty
    c.data.binarize = "none"  # none | static | dynamic (fresh Bernoulli(pixel) draw every batch)
    c.data.valid_size = 0  # examples carved off train when the dataset has no validation split; 0 = default
    # (the IWAE paper's dynamically binarized MNIST: 400, the last 400 of the 60000 training images)
    c.data.image_key = "image"  # feature holding the image, for tfds:<name>

    c.model = ml_collections.ConfigDict()
    c.model.latent_dim = 50
    c.model.stochastic_layers = 1  # Gaussian stochastic layers z_1..z_L (Burda et al. 2015 section 5); >1: HierarchicalVAE
    c.model.latent_dims = ()  # sizes of z_1..z_L when stochastic_layers > 1 (z_1 next to x), e.g. (100, 50)
    c.model.upper_hidden = (100, 100)  # MLP between z_l and z_{l+1} (both q and p) when stochastic_layers > 1
    c.model.encoder_hidden = (200, 200)
    c.model.decoder_hidden = (200, 200)
    c.model.activation = "tanh"
    c.model.prior = "standard_normal"  # a registered prior (jaxvae.register_prior)
    c.model.likelihood = "bernoulli"  # bernoulli | gaussian (fixed obs_variance) | gaussian_learned |
    # discretized_logistic | discretized_logistic_mixture | discretized_gaussian (8-bit pixels) | registered
    c.model.obs_variance = 0.1  # sigma^2 of the fixed-variance Gaussian decoder
    c.model.decoder_output_act = "identity"  # identity | sigmoid (mean in [0, 1]) ...
    c.model.flow = "none"  # none | planar | radial | a registered flow (jaxvae.register_flow)
    c.model.flow_length = 0
    c.model.amortized_flow = True  # flow parameters output by the encoder (Rezende & Mohamed 2015)
    c.model.compute_dtype = "float32"  # float32 | bfloat16: the networks' matmuls in training (parameters,
    # optimizer, log-weights, log-mean-exp and KL stay float32; evaluation always runs in float32)
    # The parts' options: each flow / prior declares its own as the fields of its dataclass, with their
    # defaults (jaxvae.vae.flows, jaxvae.vae.priors; docs/extending.md); a part reads the ones it declares
    # (a config sweeping over flows carries the options of each). These are the built-in parts' (the same
    # defaults: tested); a custom part's option needs no line here (set it in the experiment file).
    c.model.flow_options = ml_collections.ConfigDict()
    c.model.flow_options.init_scale = 1e-3  # every amortized flow: std of the encoder's flow head's kernel at
    # init (bias 0): layers start near the identity (0.01 and 0.05 did not train better: benchmarks/README.md)
    c.model.flow_options.head_scale = 1.0  # every amortized flow: the flow head's outputs = this constant x a
    # Dense layer's (kernel init std init_scale / this, so the initial outputs do not change); under Adam a
    # learning-rate multiplier for the flow head (1.0 = the layer as before; 0.1 for planar / Sylvester)
    c.model.flow_options.hidden = (64,)  # iaf: hidden widths of each layer's MADE network (global weights)
    c.model.flow_options.context = 0  # iaf: size of the per-example context the encoder feeds each MADE (0 = none)
    c.model.flow_options.variant = "orthogonal"  # sylvester: orthogonal | householder | triangular (Q's form)
    c.model.flow_options.columns = 0  # sylvester orthogonal: columns M of Q (1..latent_dim; 0 = latent_dim)
    c.model.flow_options.reflections = 4  # sylvester householder: Householder reflections per layer
    c.model.flow_options.iterations = 30  # sylvester orthogonal: Bjorck iterations orthogonalizing Q
    c.model.prior_options = ml_collections.ConfigDict()
    c.model.prior_options.components = 500  # vampprior: pseudo-inputs K; mog: mixture components
    c.model.prior_options.init_from = "data"  # vampprior pseudo-inputs: data (K training examples) | random
    # (N(0.5, 0.01^2))
    c.model.init_output_bias = True  # decoder output bias = data pixel log-odds (Bernoulli) / mean
    c.model.network = "mlp"  # mlp | conv | resnet | gated (jaxvae.vae.conv; conv nets ignore *_hidden)
    c.model.conv_widths = (32, 64)  # channels of the encoder's conv stages (the decoder reverses them)
    c.model.conv_kernel = 3  # kernel size of every (transposed) convolution
    c.model.conv_strides = (2, 2)  # per stage; image height and width must divide by their product
    c.model.normalization = "none"  # none | layer | group, after each conv (never batch norm)
    c.model.num_mixtures = 5  # components per pixel of likelihood discretized_logistic_mixture

    c.objective = ml_collections.ConfigDict()
    c.objective.name = "elbo"  # elbo | elbo_stl | iwae | iwae_dreg | miwae | piwae | ciwae | rws | rws_dreg | registered
    c.objective.k = 1  # samples per example: K of the IWAE bound, or S of a multi-sample ELBO
    # (for miwae/piwae: K of each of the objective.m groups, M*K draws in all)
    c.objective.m = 1  # miwae/piwae only: M, the number of independent IWAE_K bounds averaged (Rainforth et al. 2018)
    c.objective.beta_ciwae = 0.5  # ciwae only: CIWAE = beta_ciwae * ELBO_K + (1 - beta_ciwae) * IWAE_K, in [0, 1]
    c.objective.beta = 1.0  # KL weight (beta-VAE); the final value of the KL warm-up
    c.objective.kl_warmup_steps = 0  # beta ramps linearly from 0 to objective.beta over these steps
    c.objective.analytic_kl = True  # analytic KL where it exists (Gaussian q without flow)
    c.objective.options = ml_collections.ConfigDict()  # extra keyword options of a custom objective
    # (fields declared in the experiment file, e.g. c.objective.options.tau = 0.5; free-form)

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 100
    c.train.num_epochs = 10  # with schedule == "constant"
    c.train.schedule = "constant"  # constant | iwae (3^i passes at lr 1e-3 * 10^(-i/7), i = 0..7)
    c.train.budget = 1.0  # scales the number of passes (iwae schedule or num_epochs) for short runs
    c.train.learning_rate = 1e-3
    c.train.adam_b1 = 0.9
    c.train.adam_b2 = 0.999
    c.train.adam_eps = 1e-4
    c.train.grad_clip_norm = 0.0  # 0 = no clipping
    c.train.steps_per_dispatch = 0  # steps fused into one lax.scan call; 0 = one epoch (conv nets on CPU: 1, see
    # train.dispatch_steps: XLA:CPU runs conv gradients inside a loop ~20x slower)
    c.train.log_every_steps = 500
    c.train.eval_every_epochs = 1  # validation bound (for the best checkpoint); 0 = only at the end
    c.train.checkpoint_every_epochs = 1
    c.train.keep_checkpoints = 3
    c.train.init_from = ""  # workdir of another run whose parameters start this one (fresh optimizer;
    # Burda et al. 2015 Table 2); "" = fresh initialisation
    c.train.init_checkpoint = "best"  # best | latest: which checkpoint of train.init_from
    c.train.nan_policy = "stop"  # stop | skip (skip the update of a step with a non-finite loss/gradient)

    c.parallel = ml_collections.ConfigDict()
    c.parallel.num_devices = 0  # devices of the data-parallel mesh; 0 = all (every host's, multi-host)
    c.parallel.member_shards = 0  # vectorized groups: device groups the member axis is split over
    # (each trains members/member_shards runs, its batch data-parallel over the group's devices);
    # 0 = gcd(members, devices), i.e. members before batch. Ignored by single runs.
    c.parallel.coordinator_address = ""  # multi-host without SLURM/TPU auto-detection: "host:port"
    c.parallel.num_processes = 1
    c.parallel.process_id = 0

    c.eval = ml_collections.ConfigDict()
    c.eval.ks = (1, 5, 50, 5000)  # IWAE bounds reported on the test set; the largest is the NLL estimate
    c.eval.batch_size = 100
    c.eval.chunk_size = 100  # importance samples drawn at once (memory is O(chunk_size x batch_size));
    # 100 measured 2x faster than 500 for the K=5000 estimate on CPU (benchmarks/README.md)
    c.eval.valid_k = 50  # bound used on the validation set to pick the best checkpoint
    c.eval.valid_examples = 2000  # validation examples used for it (0 = all)
    c.eval.max_examples = 0  # 0 = every test example
    c.eval.train_examples = 0  # train-set bounds (ELBO, IWAE_K, NLL) on a fixed subset of this many training
    # examples, for the train/test gap; 0 = none
    c.eval.binarize_seed = -1  # data.binarize=dynamic: seed of the one fixed binarization of the test set
    # (and the train subset); -1 = the run's seed + 2 (per seed), >= 0 = the same draw for every run
    c.eval.surgery_samples = 1  # z draws per example for the ELBO-surgery marginal KL
    c.eval.images = True  # write PNG pictures into the workdir
    # Sandwiching log p(x) (jaxvae.vae.ais, jaxvae.vae.gaps; docs/ais.md). All off by default (examples = 0).
    c.eval.ais = ml_collections.ConfigDict()  # annealed importance sampling on the first test examples
    c.eval.ais.examples = 0  # test examples given an AIS estimate of log p(x); 0 = off
    c.eval.ais.num_steps = 1000  # T: intermediate distributions q^(1-beta_t) p(x,z)^beta_t
    c.eval.ais.chains = 16  # independent chains per example (log p_hat = log mean of their weights)
    c.eval.ais.leapfrog_steps = 10  # leapfrog steps per HMC transition
    c.eval.ais.init = "encoder"  # encoder (start from q(z|x)) | prior (start from p(z))
    c.eval.ais.schedule = "sigmoid"  # sigmoid | linear spacing of beta_t
    c.eval.ais.step_size = 0.05  # initial HMC step size (then adapted per example)
    c.eval.ais.target_accept = 0.65  # HMC acceptance rate the step size is adapted toward
    c.eval.ais.adapt_rate = 0.5  # log step += adapt_rate * (acceptance - target) after each transition
    c.eval.ais.batch_size = 50  # examples per compiled program (memory is O(batch_size x chains))
    c.eval.bdmc = ml_collections.ConfigDict()  # BDMC sandwich on examples simulated from the model
    c.eval.bdmc.examples = 0  # simulated (z, x) pairs; 0 = off. HMC settings as in eval.ais
    c.eval.bdmc.num_steps = 1000  # T of both the forward (lower) and reverse (upper) AIS runs
    c.eval.bdmc.chains = 4  # chains per simulated example, each direction
    c.eval.bdmc.init = "prior"  # prior | encoder (Gaussian posteriors only: reverse AIS needs u = z)
    c.eval.gaps = ml_collections.ConfigDict()  # inference-gap decomposition (Cremer et al. 2018)
    c.eval.gaps.examples = 0  # first test examples decomposed; 0 = off. log p(x) from AIS when it covers
    # them (eval.ais.examples >= eval.gaps.examples), otherwise IWAE at the largest eval.ks
    c.eval.gaps.samples = 10  # ELBO samples per optimisation step of q*
    c.eval.gaps.eval_samples = 1000  # fresh samples estimating ELBO[q_phi] and ELBO[q*]
    c.eval.gaps.learning_rate = 0.01  # Adam, decayed exponentially to a tenth over max_steps
    c.eval.gaps.max_steps = 2000  # at most this many optimisation steps of q*
    c.eval.gaps.check_every = 100  # convergence window (steps)
    c.eval.gaps.tol = 0.01  # stop when the window-mean ELBO (over the batch) improves by < tol nats
    c.eval.gaps.batch_size = 100  # examples optimised by one program

    # Experiment tracking beside metrics.jsonl and TensorBoard (docs/tracking.md). Only process 0 logs.
    c.tracking = ml_collections.ConfigDict()
    c.tracking.mlflow = False  # log to MLflow; needs pip install 'jaxvae[mlflow]'
    c.tracking.mlflow_tracking_uri = ""  # "" = $MLFLOW_TRACKING_URI, else the file store <workdir>/../mlruns;
    # a path (file store), file:, sqlite:///x.db or http(s):// server URI
    c.tracking.mlflow_experiment = ""  # MLflow experiment name; "" = config.name
    c.tracking.wandb = False  # log to Weights & Biases; needs pip install 'jaxvae[wandb]'
    c.tracking.wandb_project = "jaxvae"
    c.tracking.wandb_mode = "offline"  # offline (no network; upload later with wandb sync) | online | disabled
    c.tracking.wandb_dir = ""  # where W&B writes its wandb/ folder; "" = the workdir
    return c


def iwae_paper_config() -> ml_collections.ConfigDict:
    """Burda, Grosse & Salakhutdinov (2015)'s one-layer MNIST setting, the base of the IWAE-paper
    experiments: 784-200-200-50 tanh, Bernoulli, Adam(0.9, 0.999, eps=1e-4), batch 20, 3^i passes at
    learning rate 1e-3 * 10^(-i/7), i = 0..7 (``train.budget`` scales the 3280 passes), IWAE_K for
    K = 1, 5, 50, 5000 at evaluation."""
    c = base_config()
    c.data.name = "binarized_mnist"
    c.model.latent_dim = 50
    c.model.encoder_hidden = (200, 200)
    c.model.decoder_hidden = (200, 200)
    c.model.activation = "tanh"
    c.model.likelihood = "bernoulli"
    c.objective.name = "iwae"
    c.objective.k = 50
    c.train.batch_size = 20
    c.train.schedule = "iwae"
    c.train.learning_rate = 1e-3
    c.train.adam_b1, c.train.adam_b2, c.train.adam_eps = 0.9, 0.999, 1e-4
    c.train.log_every_steps = 5000
    c.train.eval_every_epochs = 10
    c.train.checkpoint_every_epochs = 1
    c.eval.ks = (1, 5, 50, 5000)
    return c


def flow_mnist_config() -> ml_collections.ConfigDict:
    """The setting shared by the flow-posterior and learned-prior experiments (planar_flow_mnist,
    flows_mnist, vampprior_mnist): statically binarized MNIST, one-hidden-layer 784-400-40 tanh MLPs,
    Bernoulli, single-sample ELBO, batch 100, 100 passes at a constant Adam learning rate 1e-3 with
    gradient clipping at norm 100, IWAE_K for K = 1, 5, 50, 5000 at evaluation. The experiment files set
    the posterior / prior (and vampprior_mnist its own network sizes and learning rate)."""
    c = base_config()
    c.data.name = "binarized_mnist"
    c.model.latent_dim = 40
    c.model.encoder_hidden = (400,)
    c.model.decoder_hidden = (400,)
    c.model.activation = "tanh"
    c.objective.name = "elbo"
    c.objective.k = 1
    c.train.batch_size = 100
    c.train.schedule = "constant"
    c.train.num_epochs = 100
    c.train.learning_rate = 1e-3
    c.train.grad_clip_norm = 100.0
    c.train.log_every_steps = 5000
    c.train.eval_every_epochs = 10
    c.eval.ks = (1, 5, 50, 5000)
    return c


# Fields of the flat layout written before the parts' options moved into option blocks -> their new place.
RENAMED = {
    "model.flow_init_scale": "model.flow_options.init_scale",
    "model.flow_head_scale": "model.flow_options.head_scale",
    "model.flow_hidden": "model.flow_options.hidden",
    "model.flow_context": "model.flow_options.context",
    "model.sylvester_variant": "model.flow_options.variant",
    "model.sylvester_columns": "model.flow_options.columns",
    "model.sylvester_reflections": "model.flow_options.reflections",
    "model.prior_components": "model.prior_options.components",
    "model.prior_init": "model.prior_options.init_from",
}


def upgrade_config_dict(d: dict) -> dict:
    """A config dict (``config.to_dict()``, config.json's fingerprint or results.json's config) in today's
    layout: the flat fields of older workdirs (``RENAMED``: model.flow_hidden, model.prior_components, ...)
    moved into model.flow_options / model.prior_options. A dict already in today's layout comes back
    equal. ``d`` is not changed."""
    import copy

    out = copy.deepcopy(d)
    model = out.get("model") if isinstance(out, dict) else None
    if not isinstance(model, dict):
        return out
    for old, new in RENAMED.items():
        leaf = old.split(".", 1)[1]
        if leaf in model:
            block, _, name = new.split(".", 1)[1].partition(".")
            if not isinstance(model.get(block), dict):
                model[block] = {}
            model[block][name] = model.pop(leaf)  # the old field is the run's value (a block beside it
            # can only hold defaults merged in)
    return out


def renamed_message(field: str) -> str | None:
    """One line for a field of the old flat layout (``RENAMED``), naming its new place; None otherwise."""
    new = RENAMED.get(field)
    return f"config field {field!r} is now {new!r}" if new else None


def flatten(c, prefix="") -> dict:
    """{dotted path: value} for every leaf of a (nested) ConfigDict or dict."""
    out = {}
    for k, v in c.items():
        if isinstance(v, (ml_collections.ConfigDict, dict)):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
