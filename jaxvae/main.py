"""Run one experiment: ``python -m jaxvae.main --config=experiments/X.py --workdir=runs/X``.

Any config field can be overridden: ``--config.objective.k=50 --config.train.budget=0.01``.
Exit codes: 0 finished, 3 preempted (checkpoint saved; run again to resume), 1 error.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file (experiments/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, pictures, results.")
_ALLOW = flags.DEFINE_bool("allow_config_change", False,
                           "Resume a workdir even though its saved config differs from this one.")


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; flags look like --config.train.batch_size=20",
              file=sys.stderr)
        return 2
    if not flags.FLAGS['verbosity'].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    from jaxvae.runner import main_entry
    from jaxvae.validation import ConfigError, validate_config

    try:
        validate_config(_CONFIG.value)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from jaxvae.parallel import initialize_distributed

    initialize_distributed(_CONFIG.value)
    return main_entry(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW.value)


def run():
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
