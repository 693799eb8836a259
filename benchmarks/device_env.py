"""The device machine's own Python (issue 31, item 4): which packages jaxvae may import there, its versions,
and an import of every jaxvae module, so that an incompatibility shows in seconds, not after minutes of
device time.

    python benchmarks/device_env.py                  # versions + import walk (device_check.py's first step)
    python benchmarks/device_env.py --check-imports  # the walk alone, with every import that a jaxvae module
                                                     # makes of a package outside DEVICE_PACKAGES refused
    python benchmarks/device_env.py --json FILE      # also write what it found as JSON

The lent accelerator machines run their image's ``python3`` (3.12) and reach no registry. Their image holds
jax (0.11) with its CUDA plugin, flax, optax, orbax-checkpoint, chex, numpy, scipy, matplotlib, scikit-learn,
absl-py, etils, pyyaml, protobuf, torch, numpyro and more (/work/.library/device/KINDS.md), but not
ml-collections, blackjax, tensorboardX, tensorflow-datasets or array-record. ``CARRIED`` are the wheels
``benchmarks/fetch_device_wheels.sh`` downloads and ``device_check.sh --wheels DIR`` installs there (pure
Python, --no-deps: everything they need is in the image). tensorflow-datasets (and array-record) are not
carried: they only build and read the TFDS datasets (mnist, binarized_mnist, omniglot, cifar10,
``tfds:<name>``), which the device check does not use (it reads binarized_mnist.npz directly), so the three
modules that define TFDS builders (``TFDS_MODULES``) are the only ones allowed to fail on the device, and only
for want of tensorflow_datasets.

``--check-imports`` is what tests/test_device_check.py runs on every CI run: a jaxvae module that starts
importing, at import time, a package outside ``DEVICE_PACKAGES`` (say ``import tensorflow_datasets`` at the
top of a runner module) fails it, here, before any device time is spent. Imports made inside functions are
not seen by the walk; the device check's tiny run (``device_check.sh --tiny``), rehearsed in a venv holding
only these packages, covers the paths the check takes.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.metadata
import json
import os
import pkgutil
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Distributions in the device image that jaxvae (and the device check) may import, by import name.
IMAGE_PACKAGES = {
    "jax": "jax", "jaxlib": "jaxlib", "jax_plugins": "jax-cuda13-plugin", "flax": "flax", "optax": "optax",
    "orbax": "orbax-checkpoint", "chex": "chex", "numpy": "numpy", "scipy": "scipy", "matplotlib": "matplotlib",
    "sklearn": "scikit-learn", "absl": "absl-py", "etils": "etils", "yaml": "pyyaml", "google": "protobuf",
    "torch": "torch", "numpyro": "numpyro", "PIL": "pillow", "packaging": "packaging",
    "typing_extensions": "typing-extensions", "ml_dtypes": "ml-dtypes", "opt_einsum": "opt-einsum",
    "msgpack": "msgpack", "tensorstore": "tensorstore", "pytest": "pytest", "hypothesis": "hypothesis",
}
# Carried as wheels (benchmarks/fetch_device_wheels.sh keeps this list; pinned to what pyproject.toml allows).
CARRIED = {"ml_collections": "ml-collections==1.1.0", "blackjax": "blackjax==1.7.1",
           "tensorboardX": "tensorboardX==2.6.5"}
DEVICE_PACKAGES = frozenset(IMAGE_PACKAGES) | frozenset(CARRIED)
# Modules that define TFDS builders: importing them needs tensorflow_datasets, which is not carried.
TFDS_MODULES = {"jaxvae.data.builders": "tensorflow_datasets", "jaxvae.data.cifar10": "tensorflow_datasets",
                "jaxvae.data.omniglot": "tensorflow_datasets"}
VERSIONS = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt",
            "flax", "optax", "orbax-checkpoint", "chex", "numpy", "scipy", "matplotlib", "scikit-learn",
            "absl-py", "etils", "ml-collections", "blackjax", "tensorboardX", "tensorflow-datasets", "torch",
            "numpyro")


class RefuseOutside(importlib.abc.MetaPathFinder):
    """Refuses a top-level import made from a file under ``watched`` when its name is neither in the
    standard library nor in ``allowed`` (imports made by those packages themselves pass)."""

    def __init__(self, allowed, watched: Path):
        self.allowed = set(allowed) | {"jaxvae"}
        self.watched = str(watched) + os.sep
        self.refused: list[tuple[str, str]] = []

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if path is not None or top in self.allowed or top in sys.stdlib_module_names:
            return None
        f = sys._getframe(1)
        while f is not None and f.f_code.co_filename.startswith("<frozen"):
            f = f.f_back  # the import machinery's own frames
        if f is not None and f.f_code.co_filename.startswith(self.watched):
            self.refused.append((fullname, f.f_code.co_filename))
            raise ModuleNotFoundError(f"No module named {fullname!r} (refused: not a device-image or carried "
                                      f"package; see benchmarks/device_env.py)", name=fullname)
        return None


def jaxvae_modules() -> list[str]:
    import jaxvae

    names = ["jaxvae"]
    for m in pkgutil.walk_packages(jaxvae.__path__, "jaxvae."):
        if m.name.rpartition(".")[2] != "__main__":  # importing a __main__ would run its command
            names.append(m.name)
    return sorted(names)


def import_all(names) -> dict:
    """Imports each module; returns {"ok": [...], "tfds_only": [...], "failed": {name: error}}."""
    ok, tfds_only, failed = [], [], {}
    for name in names:
        try:
            importlib.import_module(name)
            ok.append(name)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
            if name in TFDS_MODULES and missing and missing.partition(".")[0] == TFDS_MODULES[name]:
                tfds_only.append(name)
            else:
                failed[name] = "".join(traceback.format_exception_only(e)).strip()[-1500:]
    return {"ok": ok, "tfds_only": tfds_only, "failed": failed}


def versions() -> dict:
    out = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform()}
    for dist in VERSIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def backend() -> dict:
    """JAX's backend and devices, torch's device (each timed: the first touch of a GPU costs seconds)."""
    out = {}
    t = time.perf_counter()
    try:
        import jax

        devs = jax.devices()
        out.update(jax_backend=jax.default_backend(), jax_devices=[str(d) for d in devs],
                   device_kind=devs[0].device_kind)
        try:
            stats = devs[0].memory_stats() or {}
            out["device_memory_bytes"] = stats.get("bytes_limit")
        except Exception:  # noqa: BLE001 - not every backend has memory_stats
            out["device_memory_bytes"] = None
    except Exception as e:  # noqa: BLE001
        out["jax_error"] = "".join(traceback.format_exception_only(e)).strip()
    out["jax_init_s"] = round(time.perf_counter() - t, 2)
    try:
        import torch

        out["torch_cuda"] = bool(torch.cuda.is_available())
        out["torch_cuda_version"] = torch.version.cuda
        if out["torch_cuda"]:
            out["torch_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        out["torch_cuda"] = None
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True)
        out["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-imports", action="store_true",
                    help="only the import walk, refusing imports of packages outside DEVICE_PACKAGES")
    ap.add_argument("--json", default="", help="write the findings here")
    ap.add_argument("--without", nargs="*", default=[], metavar="NAME",
                    help="with --check-imports: refuse these allowed names too (shows that the guard works)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    rec: dict = {}
    guard = None
    if args.check_imports:
        guard = RefuseOutside(DEVICE_PACKAGES - set(args.without), ROOT / "jaxvae")
        sys.meta_path.insert(0, guard)
    else:
        rec["versions"] = versions()
        print(json.dumps(rec["versions"]), flush=True)
        rec["backend"] = backend()
        print(json.dumps(rec["backend"]), flush=True)
    names = jaxvae_modules()
    rec["imports"] = import_all(names)
    if guard is not None:
        rec["imports"]["refused"] = sorted({f"{n} (from {Path(f).relative_to(ROOT)})" for n, f in guard.refused})
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    imp = rec["imports"]
    print(f"imported {len(imp['ok'])} of {len(names)} jaxvae modules in {rec['seconds']} s; "
          f"{len(imp['tfds_only'])} need tensorflow_datasets only ({', '.join(imp['tfds_only']) or 'none'}); "
          f"{len(imp['failed'])} failed", flush=True)
    for name, err in imp["failed"].items():
        print(f"FAILED {name}: {err}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rec, indent=1))
    bad = bool(imp["failed"]) or "jax_error" in rec.get("backend", {})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
