"""Run one experiment: ``python -m jaxvae.main --config=experiments/X.py --workdir=runs/X``.

Any config field can be overridden: ``--config.objective.k=50 --config.train.budget=0.01``.
Exit codes: 0 finished, 3 preempted (checkpoint saved; run again to resume), 1 error, 2 invalid flags
or config (reported before any compute, one line per problem).
"""

from __future__ import annotations

import signal
import sys

if __name__ == "__main__":  # before the heavy imports below start any thread (runner.sigterm_interrupts)
    # SIGTERM/SIGINT stay pending until the run's handlers are installed (runner.sigterm_interrupts), so a
    # signal while starting is a preemption like any other (exit 3, one line), never an exception inside an
    # import, and only the main thread can take it.
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

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
    from jaxvae.experiment.validation import ConfigError, describe_flag_error, validate_config

    try:
        validate_config(_CONFIG.value)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a config file that fails to load is only reported when first accessed
        print(f"error: {describe_flag_error(e, sys.argv)}", file=sys.stderr)
        return 2
    from jaxvae.experiment.runner import main_entry
    from jaxvae.experiment.parallel import initialize_distributed

    initialize_distributed(_CONFIG.value)
    return main_entry(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW.value)


def _parse_flags(argv):
    """absl's flag parsing, with every error (unknown --config.x, wrong type, bad config file) reported
    as one line and exit code 2 instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:
        from jaxvae.experiment.validation import describe_flag_error

        print(f"error: {describe_flag_error(e, argv)}", file=sys.stderr)
        sys.exit(2)


def run():
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
