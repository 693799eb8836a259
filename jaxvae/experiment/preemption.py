"""Preemption: SIGTERM/SIGINT become a checkpoint and exit code 3, never lost work.

Inside the training loop a signal only sets a flag (``preemption_flag``) that the loop reads at its
agreement points (``stop_agreed``: before each dispatch, and before and after the final evaluation), which
every process of a multi-process run passes together, so that all of them checkpoint the same step.
Outside the loop (``sigterm_interrupts``) a single-process run raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import contextlib
import signal

import jax
import numpy as np

from jaxvae.experiment.protocol import Preempted

# The last SIGTERM/SIGINT this process received while a run was going on ("signal": its number, or None).
# Inside the training loop (``preemption_flag``) and, in a multi-process run, everywhere else too
# (``sigterm_interrupts``), a signal only records itself here; the run acts on it at the agreement points
# (``stop_agreed``) that every process passes: before each dispatch, and before and after the final
# evaluation. "armed": inside ``sigterm_interrupts`` (a signal received before the run started counts).
_received = {"signal": None, "armed": False}


@contextlib.contextmanager
def preemption_flag():
    """Turns SIGTERM/SIGINT into a flag (``_received``) that the loop checks at each dispatch boundary."""

    def handler(signum, frame):
        _received["signal"] = signum

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield _received
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def forget_earlier_signal() -> None:
    """At the start of a run called as a library (not inside ``sigterm_interrupts``): a signal that an
    earlier run in this process received is not this run's."""
    if not _received["armed"]:
        _received["signal"] = None


def received_signal() -> int | None:
    """The SIGTERM/SIGINT this process received during the run (None: none; see ``_received``)."""
    return _received["signal"]


def stop_requested() -> bool:
    """Whether this process received SIGTERM/SIGINT during the run (see ``_received``)."""
    return _received["signal"] is not None


def preemption_save_due(step: int, last_good: int | None, total_steps: int) -> bool:
    """Whether a preempted loop must checkpoint ``step`` before it exits (not already saved, not the end)."""
    return step < total_steps and step != last_good


def stop_agreed(local: bool) -> bool:
    """Whether any process of the run was asked to stop (checked at each dispatch boundary): a preemption
    signal may reach one host of a multi-host run only, and then every host must checkpoint the same step
    and exit 3. One tiny all-gather per dispatch, only when there are several processes."""
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.asarray([int(local)], np.int32))))


def nothing_trained(last_good: int | None) -> str:
    """What a run stopped before its first dispatch saved: nothing new."""
    return ("nothing new (stopped before training; the last checkpoint is step "
            f"{last_good})" if last_good is not None else "nothing (stopped before the first training step)")


def stop_reason(signum) -> str:
    return f"signal {signum}" if signum is not None else "a preemption signal on another process of this run"


def preemption(why: str, saved: str) -> Preempted:
    """The error that ends a preempted loop (exit 3), after ``saved`` was checkpointed."""
    return Preempted(f"{why} received: saved {saved}; run the same command again to resume")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def inside_import(frame) -> bool:
    """Whether ``frame`` (a signal handler's) runs inside an import (a module's top-level code)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def sigterm_interrupts():
    """SIGTERM and SIGINT outside the training loop (data loading, checkpoint restore, compilation, final
    evaluation): in a single-process run they raise KeyboardInterrupt, so a preempted job exits 3
    ("preempted") at once instead of dying silently; inside the loop ``preemption_flag`` takes over
    (checkpoint, then exit 3). In a multi-process run a signal reaches one process only, and raising there
    would leave the others waiting in a collective: there the handler only records it (``_received``) and
    every process stops at the next agreement point (``stop_agreed``: before each dispatch, the first one
    included, and before and after the final evaluation), all with the same checkpoint and exit 3.
    SIGINT gets this handler too (not Python's default one): otherwise ``asyncio.run`` inside orbax's
    restore installs its own, which only cancels orbax's task, and an interrupt there was lost (the fault
    campaign found runs that finished with exit 0 after a Ctrl-C).

    The entry points (``jaxvae.main``, ``jaxvae.experiment.vectorized``) block SIGTERM/SIGINT first thing,
    before any import starts a thread, so every thread JAX/XLA starts inherits the blocked mask; here the
    handlers are installed, then the signals are unblocked in this (the main) thread only, and one that
    arrived while the process was starting is handled at that moment. Why: a process-directed signal goes
    to any thread that does not block it. Taken by an XLA worker thread, Python's handler still runs in
    the main thread, but only once the main thread's current system call returns, so a blocking wait (the
    slowed data load of the test hook: a 60 s sleep) was not interrupted and the run stopped only when it
    ended by itself: the SIGTERM-while-loading test's timeout in the cold-run record (reproduced by sending
    SIGTERM to a worker thread's id: exit after the whole sleep instead of 0.3 s)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    jax.local_devices()  # the backend (and its thread pools) exists before the signals are unblocked
    multi = jax.process_count() > 1

    def handler(signum, frame):
        _received["signal"] = signum
        if multi:
            return
        if inside_import(frame):
            # Raising inside an import can cross a C++ extension's exception boundary: the fault campaign
            # had a SIGTERM land in torch's module initialization (imported by tensorboardX for the metric
            # writer), where pybind11 turned the KeyboardInterrupt into std::terminate (exit -6, no
            # checkpoint of the interruption). So the signal is re-sent to the main thread every 50 ms
            # until the import is over, and handled then (a blocking wait outside imports is still
            # interrupted at once).
            threading.Timer(0.05, signal.pthread_kill, (threading.main_thread().ident, signum)).start()
            return
        raise KeyboardInterrupt(f"signal {signum}")

    _received.update(signal=None, armed=True)
    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])  # (unchanged: read only)
    try:
        # inside the try: a signal pending since start-up raises here, and the finally still restores
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        yield
    finally:
        # The entry points (which blocked the signals) are exiting once the run's outcome is known: a
        # signal during that exit (interpreter and XLA teardown, seconds under load) must not turn the
        # outcome's exit code (0 / 3 / 1) into death by SIGTERM (-15). Restoring their blocked mask is not
        # enough: threads started inside this block (orbax's, XLA's lazily created pools) inherited the
        # unblocked mask and would take the signal with the default action restored (the fault campaign's
        # finished runs that exited -15, reproduced by a SIGTERM just after "finished"). So there the
        # signals are ignored from here on; elsewhere (tests, notebooks) the old handlers come back.
        blocked = all(s in old_mask for s in STOP_SIGNALS)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for s, h in old.items():
            signal.signal(s, signal.SIG_IGN if blocked else h)
        _received["armed"] = False
