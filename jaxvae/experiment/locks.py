"""One writer per workdir: an exclusive lock on ``<workdir>/.lock`` held by the process for the run's life.

The lock is ``fcntl.flock`` on the file: the kernel releases it when the process ends, however it ends
(``kill -9`` included), so a lock is never stale. The file holds the owner (host, pid, since) for the
refusal message; its content is informative only, the flock is what counts. A second process on the same
workdir gets ``WorkdirBusy`` ("workdir X is in use by host H, pid P since T; ...") before it writes
anything (opening an existing file does not modify it).

Process i > 0 of a multi-host run locks ``.lock.<i>`` (all processes of one run share the workdir).

The local launcher (``jaxvae.sweeps.local``) takes a job's locks itself before it writes the run's log,
and hands them to the child process: the open file descriptions are inherited (``pass_fds``) and named in
``$JAXVAE_WORKDIR_LOCK_FDS`` (``{"<resolved workdir>": fd}``), so there is no moment between the
launcher's check and the run's own lock where another launcher could slip in.

Filesystems without ``flock`` (some NFS/FUSE mounts answer ENOLCK/EOPNOTSUPP): the fallback is a file
``<workdir>/.lock.owner`` created with ``O_EXCL``, holding host, pid and a heartbeat refreshed every
``HEARTBEAT_S`` seconds by a daemon thread. It is taken over only when the owner is provably gone: on the
same host, its pid no longer exists; on another host, no heartbeat for ``STALE_S`` seconds (a host that
stops refreshing for that long is dead or cut off). ``kill -9`` on this fallback leaves the file behind
until then.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

LOCK_NAME = ".lock"
FDS_ENV = "JAXVAE_WORKDIR_LOCK_FDS"
HEARTBEAT_S = 15.0
STALE_S = 300.0
RETRY_S = 1.0  # a short wait before refusing: another process may be probing the lock (is_held)
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirBusy(RuntimeError):
    """Another process holds the workdir's lock; the message names it and says what to do."""


class LockUnavailable(OSError):
    """The lock file cannot be created (the workdir is not writable)."""


def lock_path(workdir: str | Path, process_index: int = 0) -> Path:
    return Path(workdir) / (LOCK_NAME if process_index == 0 else f"{LOCK_NAME}.{process_index}")


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _owner_text(path: Path) -> str:
    """'host H, pid P since T' from a lock file (or a vaguer phrase when it cannot be read)."""
    try:
        o = json.loads(path.read_text())
        return f"host {o['host']}, pid {o['pid']} since {o['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _busy(workdir: Path, path: Path) -> WorkdirBusy:
    return WorkdirBusy(f"workdir {workdir} is in use by {_owner_text(path)} (it holds {path.name}); wait for "
                       "that run to end or stop it, or choose another --workdir")


def _inherited_fds() -> dict:
    try:
        return {k: int(v) for k, v in json.loads(os.environ.get(FDS_ENV) or "{}").items()}
    except (ValueError, TypeError, AttributeError):
        return {}


class WorkdirLock:
    """A held lock on one workdir (``acquire``); ``release`` gives it back (the OS does at exit too)."""

    def __init__(self, workdir: Path, path: Path, fd: int | None, key: str, fallback: bool = False):
        self.workdir, self.path, self.fd, self.key, self.fallback = workdir, path, fd, key, fallback
        self.count = 1
        self._stop = threading.Event()
        if fallback:
            threading.Thread(target=self._heartbeat, daemon=True).start()

    def _write_owner(self) -> None:
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": _now(),
                           "heartbeat": time.time()}).encode()
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, info, 0)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                o = json.loads(self.path.read_text())
                if o.get("pid") != os.getpid() or o.get("host") != socket.gethostname():
                    return  # taken over (we were presumed dead): stop touching it
                o["heartbeat"] = time.time()
                tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(o))
                os.replace(tmp, self.path)
            except (OSError, ValueError):
                pass

    def release(self) -> None:
        self._stop.set()
        _HELD.pop(self.key, None)
        if self.fallback:
            with contextlib.suppress(OSError, ValueError):
                o = json.loads(self.path.read_text())
                if o.get("pid") == os.getpid() and o.get("host") == socket.gethostname():
                    self.path.unlink()
        elif self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = None


_HELD: dict[str, WorkdirLock] = {}


def _key(path: Path) -> str:
    return str(path.resolve())


def holds(workdir: str | Path, process_index: int = 0) -> bool:
    """Whether this process holds the workdir's lock."""
    return _key(lock_path(workdir, process_index)) in _HELD


def acquire(workdir: str | Path, process_index: int = 0, *, wait_s: float = RETRY_S) -> WorkdirLock:
    """Takes the workdir's lock (creating the folder and the lock file if needed) or raises WorkdirBusy
    (nothing written) or LockUnavailable (the folder or file cannot be created). Re-entrant within a process:
    a lock this process already holds is counted, not taken twice."""
    workdir = Path(workdir)
    path = lock_path(workdir, process_index)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LockUnavailable(e.errno, e.strerror) from None
    key = _key(path)
    if key in _HELD:
        _HELD[key].count += 1
        return _HELD[key]
    inherited = _inherited_fds().get(str(workdir.resolve()))
    if inherited is not None and process_index == 0:
        try:
            if os.path.samestat(os.fstat(inherited), os.stat(path)):
                fcntl.flock(inherited, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: a no-op that confirms it
                lock = WorkdirLock(workdir, path, inherited, key)
                lock._write_owner()
                _HELD[key] = lock
                return lock
        except OSError:
            pass  # not a valid inherited lock: take it the ordinary way
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise LockUnavailable(e.errno, e.strerror) from None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno in _NO_FLOCK:
                os.close(fd)
                return _acquire_fallback(workdir, path.with_name(path.name + ".owner"), key)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise _busy(workdir, path) from None
                raise LockUnavailable(e.errno, e.strerror) from None
            time.sleep(0.05)
    lock = WorkdirLock(workdir, path, fd, key)
    lock._write_owner()
    _HELD[key] = lock
    return lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gone(owner: dict) -> bool:
    """Whether the owner of a fallback lock is provably gone (see the module docstring)."""
    if owner.get("host") == socket.gethostname():
        return not _pid_alive(int(owner.get("pid", -1)))
    return time.time() - float(owner.get("heartbeat", 0)) > STALE_S


def _acquire_fallback(workdir: Path, path: Path, key: str) -> WorkdirLock:
    info = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now(), "heartbeat": time.time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text())
            except (OSError, ValueError):
                owner = {}
            if owner and _gone(owner):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # provably gone: take it over
                continue
            raise _busy(workdir, path) from None
        except OSError as e:
            raise LockUnavailable(e.errno, e.strerror) from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info))
        lock = WorkdirLock(workdir, path, None, key, fallback=True)
        _HELD[key] = lock
        return lock
    raise _busy(workdir, path)


def is_held(workdir: str | Path) -> str | None:
    """Cheap check for launchers: the owner ('host H, pid P since T') when another process holds the
    workdir's lock, else None. Creates nothing (a missing lock file means free); the probe is a shared
    flock taken and dropped at once (``acquire`` waits ``RETRY_S`` for such probes)."""
    workdir = Path(workdir)
    path = lock_path(workdir)
    owner_file = path.with_name(path.name + ".owner")
    if owner_file.exists():
        try:
            if not _gone(json.loads(owner_file.read_text())):
                return _owner_text(owner_file)
        except (OSError, ValueError):
            return "another process"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return _owner_text(path)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def holding(workdirs, process_index: int = 0):
    """Holds the locks of ``workdirs`` (all or none: WorkdirBusy/LockUnavailable after releasing the ones
    taken) for the block."""
    taken = []
    try:
        for wd in workdirs:
            taken.append(acquire(wd, process_index))
        yield taken
    finally:
        for lock in reversed(taken):
            lock.count -= 1
            if lock.count == 0:
                lock.release()


def owner_of(workdir: str | Path) -> str:
    return _owner_text(lock_path(workdir))
