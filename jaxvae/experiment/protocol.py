"""What the runner and the launcher (``jaxvae.sweeps``) agree on, in the experiment layer so that both
import it from here: the errors that end a run and the exit code of a preempted run and the config fields in which the runs of one
vectorized group may differ. Imports only the standard library (experiment files import the sweep
helpers, which import this)."""

from __future__ import annotations

class RunError(RuntimeError):
    """A run stopped for a reason the user can act on; the message says what happened and what to do."""


class Preempted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint was saved and the run can be resumed (exit code 3)."""


EXIT_PREEMPTED = 3  # the runner's exit code after SIGTERM + checkpoint (relaunching resumes)

# Vectorized sweeps: runs whose configs differ ONLY in these fields are trained together by one process
# (jaxvae.experiment.vectorized: parameters/optimizer states/keys stacked, one vmapped train step). Every other field
# (objective.name/k, model sizes, flow length, batch size, dataset, schedule, epochs, ...) changes array
# shapes or the program, and runs that differ in it go to separate processes.
VECTORIZED_TRACED_FIELDS = ("train.learning_rate", "objective.beta", "objective.kl_warmup_steps")  # traced
VECTORIZED_HOST_FIELDS = (  # only used on the host or for per-member setup (init, data order, keys)
    "seed", "name", "train.log_every_steps", "train.keep_checkpoints", "train.init_from")
VECTORIZED_HOST_PREFIXES = ("eval.",)  # evaluation is sequential per member, with its own config
VECTORIZED_FIELDS = VECTORIZED_TRACED_FIELDS + VECTORIZED_HOST_FIELDS + tuple(p + "*" for p in VECTORIZED_HOST_PREFIXES)


def is_vectorizable_field(key: str) -> bool:
    """May runs that differ in config field ``key`` (dotted path) be trained in one vectorized process?"""
    return key in VECTORIZED_TRACED_FIELDS or key in VECTORIZED_HOST_FIELDS or key.startswith(
        VECTORIZED_HOST_PREFIXES)
