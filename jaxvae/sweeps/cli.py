"""Command line of ``./launch.sh`` / ``python -m jaxvae.sweeps``. Sweeps: declare them in experiment files, list them, run them locally, on Slurm or on a TPU VM.

Declaring (in ``experiments/<name>.py``)::

    from jaxvae.sweeps import chain, product, zipped

    def get_sweep():
        # 2 objectives (paired with their K) x 3 seeds = 6 runs
        return product(zipped({"objective.name": ["elbo", "iwae"], "objective.k": [1, 5]}),
                       {"seed": [0, 1, 2]})

A sweep is a list of points; a point is a dict of config overrides keyed by dotted config paths. A file
without ``get_sweep`` is a one-point sweep named ``default``.

Running (the same as ``./launch.sh``)::

    python -m jaxvae.sweeps experiments/X.py --list            # runs, workdirs, overrides, state
    python -m jaxvae.sweeps experiments/X.py --dry-run         # the commands
    python -m jaxvae.sweeps experiments/X.py --parallel 4      # run them (skips finished runs)
    python -m jaxvae.sweeps experiments/X.py --slurm --gpus-per-task=1 --time=4:00:00
    python -m jaxvae.sweeps experiments/X.py --config.train.num_epochs=1   # applies to every run

Each point becomes one run ``python -m jaxvae.main --config=experiments/X.py --workdir=runs/X/<name>
--config.<path>=<value> ...`` whose stdout/stderr go to ``<workdir>/log.txt``. The launcher also writes
``<workdir>/launch.json`` (command, start/end time, exit code) and ``runs/X/sweep.json`` (the planned
runs, so the report can list runs that never started).

This module imports only the standard library (experiment files import it); ``jaxvae.sweeps.report`` is imported
lazily after a sweep.
"""


from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence

from jaxvae.experiment.protocol import EXIT_PREEMPTED, VECTORIZED_FIELDS
from jaxvae.sweeps.declare import (DEFAULT_RUNNER, DEFAULT_VECTORIZE, RUNNER_ENV, VECTORIZED_RUNNER, VECTORIZED_RUNNER_ENV)
from jaxvae.sweeps.plan import (is_url, Job, Run, call_sweep_function, read_json, describe_plan, experiment_stem, flag_value, group_runs, is_finished, load_module, make_runs, plan_jobs, run_state, split_config_arg, vectorized_argv)
from jaxvae.sweeps.local import (Launcher, now_iso, write_json, per_run_outcomes, print_summary, visible_gpus)
from jaxvae.sweeps.cluster import (slurm_script, tpu_command)

# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--config.x=y`` / ``--config.x y`` (and everything after ``--``) from our flags."""
    ours, passthrough = [], []
    argv = list(argv)
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            passthrough += argv[i + 1:]
            break
        if a.startswith("--config."):
            if "=" in a or i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                passthrough.append(a)
            else:
                passthrough.append(f"{a}={argv[i + 1]}")
                i += 1
        else:
            ours.append(a)
        i += 1
    return ours, passthrough


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxvae.sweeps",
        description="Run every point of an experiment's get_sweep() (one run each; finished runs are "
                    "skipped, unfinished ones resume). Extra --config.x=y arguments (and anything after "
                    "--) are passed to every run.",
        epilog="Examples: --list | --dry-run | --parallel 4 | --slurm --gpus-per-task=1 --time=4:00:00")
    p.add_argument("experiment", help="experiment file, e.g. experiments/iwae_mnist.py")
    p.add_argument("--root", default="runs", help="runs go to ROOT/<experiment stem>/<run name> (default: runs)")
    p.add_argument("--list", action="store_true", help="print the runs (workdir, overrides, state) and exit")
    p.add_argument("--dry-run", action="store_true", help="print the commands (or write the sbatch script) only")
    p.add_argument("--parallel", type=int, default=None,
                   help="runs at a time (default 1); with GPUs each run gets its own CUDA_VISIBLE_DEVICES, "
                        "round-robin. With --slurm: the array's concurrent task limit (%%N)")
    p.add_argument("--gpus", default=None,
                   help="comma-separated GPU ids to hand out (default: CUDA_VISIBLE_DEVICES or nvidia-smi -L)")
    p.add_argument("--only", action="append", default=None, metavar="RUN",
                   help="run only this run (name or index from --list; indices may be comma-separated); "
                        "repeatable")
    p.add_argument("--rerun", action="store_true", help="also relaunch finished runs (default: skip them)")
    p.add_argument("--no-report", action="store_true", help="don't print the report after the sweep")
    p.add_argument("--python", default=None, help="python executable for the runs (default: this one)")
    p.add_argument("--runner-module", default=None, help=argparse.SUPPRESS)
    p.add_argument("--vectorize", type=int, default=None, metavar="N",
                   help="train up to N runs that differ only in the seed or in traced hyperparameters "
                        f"({', '.join(VECTORIZED_FIELDS)}) as one vectorized process (jaxvae.experiment.vectorized; "
                        "with --slurm one array task, with --tpu-hosts one gcloud command per group). "
                        f"Default (with the default runner) N={DEFAULT_VECTORIZE} for local runs on a GPU/TPU "
                        "host, for --slurm when the sbatch options ask for GPUs (--gpus-per-task, "
                        "--sbatch-arg=--gpus=/--gres=gpu...), and for --tpu-hosts; otherwise off")
    p.add_argument("--no-vectorize", action="store_true", help="one process per run")
    p.add_argument("--no-pin", action="store_true",
                   help="with --parallel N on a host without GPUs, don't give each run its own share of the "
                        "CPUs (by default the CPUs are split into N slots and each run is pinned to one)")
    g = p.add_argument_group("Slurm (--slurm writes ROOT/<stem>/sweep.sbatch, an array job, and submits it)")
    g.add_argument("--slurm", action="store_true")
    g.add_argument("--job-name", default=None, help="default: jaxvae-<experiment stem>")
    g.add_argument("--partition", default=None)
    g.add_argument("--time", default=None, help="e.g. 4:00:00")
    g.add_argument("--mem", default=None, help="e.g. 32G")
    g.add_argument("--cpus-per-task", default=None)
    g.add_argument("--gpus-per-task", default=None)
    g.add_argument("--requeue", action="store_true",
                   help="SIGTERM 120 s before the time limit; a preempted run (exit 3) requeues its task")
    g.add_argument("--sbatch-arg", action="append", default=[],
                   help="extra '#SBATCH' line, repeatable: --sbatch-arg=--account=abc")
    t = p.add_argument_group("Multi-host TPU VM (each run, or vectorized group, is started on every host through "
                              "gcloud ssh)")
    t.add_argument("--tpu-hosts", default=None, metavar="TPU_NAME", help="TPU VM name")
    t.add_argument("--tpu-zone", default=None)
    t.add_argument("--tpu-project", default=None)
    t.add_argument("--tpu-remote-dir", default="~/jaxvae", help="repo checkout on the hosts (default ~/jaxvae)")
    return p


def _select(runs: list[Run], only: Sequence[str] | None) -> list[Run]:
    """--only values: a run name (``k=5,name=iwae``), an index from --list, or comma-separated indices."""
    if not only:
        return runs
    by_name = {r.name: r for r in runs}
    chosen: list[Run] = []
    for value in only:
        items = [value] if value in by_name else [v.strip() for v in value.split(",") if v.strip()]
        for item in items:
            if item in by_name:
                match = by_name[item]
            elif item.isdigit() and int(item) < len(runs):
                match = runs[int(item)]
            else:
                raise SystemExit(f"--only: no run {item!r} (see --list)")
            if match not in chosen:
                chosen.append(match)
    return sorted(chosen, key=lambda r: r.index)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, passthrough = split_passthrough(argv)
    args = build_parser().parse_args(ours)
    args.argv = argv
    try:
        runs, sweep_dir = make_runs(args.experiment, args.root)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    swept = {k for r in runs for k in r.overrides}
    clash = sorted({a.split("=", 1)[0][len("--config."):] for a in passthrough if a.startswith("--config.")} & swept)
    if clash:
        print(f"warning: --config.{', --config.'.join(clash)} overrides a swept field; every run gets the "
              f"command-line value and the run names no longer describe it", file=sys.stderr)

    if args.list:
        print(f"# {len(runs)} run(s) of {args.experiment} under {sweep_dir}")
        width = max(len(r.workdir) for r in runs)
        for r in runs:
            ov = " ".join(f"{k}={flag_value(v)}" for k, v in r.overrides.items()) or "(no overrides)"
            print(f"{r.index:3d}  {run_state(r.workdir):10s} {r.workdir:{width}s}  {ov}")
        return 0

    declared = [r.name for r in runs]
    runs = _select(runs, args.only)
    python = args.python or (sys.executable if not args.tpu_hosts else "python3")
    runner = args.runner_module or os.environ.get(RUNNER_ENV) or DEFAULT_RUNNER

    def base_argv(run: Run) -> list[str]:
        return [python, "-m", runner, f"--config={args.experiment}", f"--workdir={run.workdir}",
                *run.override_args(), *passthrough]

    vectorize = _vectorize_setting(args, runner)
    vec_module = os.environ.get(VECTORIZED_RUNNER_ENV) or VECTORIZED_RUNNER
    defaults = _config_defaults(args.experiment) if vectorize else None
    todo = runs
    if vectorize and not args.rerun and not args.tpu_hosts:
        # Finished runs are left out of the groups (a finished member of a group would be restored and
        # evaluated again); they stay single-run jobs that the launcher, or the Slurm task, skips. With
        # --tpu-hosts the launcher cannot see the remote workdirs.
        todo = [r for r in runs if not is_finished(r.workdir)]

    def group_argv(group: Sequence[Run]) -> list[str]:
        return vectorized_argv(python, vec_module, args.experiment, group, passthrough)

    jobs = plan_jobs(todo, base_argv, vectorize, group_argv, defaults)
    jobs += [Job([r], base_argv(r)) for r in runs if r not in todo]
    jobs.sort(key=lambda j: j.runs[0].index)
    if vectorize and not args.list:
        for line in describe_plan(jobs, runs, defaults, [r for r in runs if r not in todo]):
            print(line, file=sys.stderr, flush=True)
    elif (args.slurm and not args.no_vectorize and args.vectorize is None and runner == DEFAULT_RUNNER
          and len(runs) > 1 and any(len(g) > 1 for g in
                                    group_runs(runs, DEFAULT_VECTORIZE, _config_defaults(args.experiment)))):
        print("note: one Slurm array task per run: the sbatch options request no GPU (--gpus-per-task, "
              "--sbatch-arg=--gpus=N or --gres=gpu:N), so runs are not vectorized; --vectorize N groups "
              "them anyway", file=sys.stderr, flush=True)

    if args.slurm:
        os.makedirs(os.path.join(sweep_dir, "slurm"), exist_ok=True)
        path = os.path.join(sweep_dir, "sweep.sbatch")
        with open(path, "w") as f:
            f.write(slurm_script(jobs, sweep_dir, args))
        os.chmod(path, 0o755)
        _write_manifest(sweep_dir, args, declared, runs, jobs)
        groups = sum(len(j.runs) > 1 for j in jobs)
        print(f"wrote {path} ({len(jobs)} array tasks for {len(runs)} run(s)"
              + (f", {groups} of them vectorized groups" if groups else "")
              + f"; Slurm output: {sweep_dir}/slurm/, run logs: <workdir>/log.txt"
              + (", a group's in its first run's" if groups else "") + ")")
        if args.dry_run:
            print(f"submit with: sbatch {shlex.quote(path)}")
            return 0
        sbatch = shutil.which("sbatch")
        if sbatch is None:
            print("error: sbatch not found on PATH (use --dry-run to only write the script)", file=sys.stderr)
            return 2
        proc = subprocess.run([sbatch, path], capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        return proc.returncode

    if args.tpu_hosts:
        # The runs write their workdirs on the TPU hosts (or a bucket); the local logs of the ssh
        # sessions go to runs/<stem>/tpu_logs/<name>/ (under --root when it is a local path).
        log_root = os.path.join("runs" if is_url(sweep_dir) else args.root, experiment_stem(args.experiment),
                                "tpu_logs")
        jobs = [Job(j.runs, tpu_command(j, args), os.path.join(log_root, j.label)) for j in jobs]
        if args.parallel and args.parallel > 1:
            print("warning: --tpu-hosts runs one process (a run or a vectorized group) at a time (each "
                  "uses every host)", file=sys.stderr)
        args.parallel = 1

    if args.dry_run:
        for j in jobs:
            done = (not args.tpu_hosts and not args.rerun and all(is_finished(r.workdir) for r in j.runs))
            print(("# finished, would skip: " if done else "") + shlex.join(j.argv))
        return 0

    gpus = [g for g in args.gpus.split(",") if g.strip()] if args.gpus else visible_gpus()
    parallel = args.parallel or 1
    if parallel > 1:
        print(f"running {len(jobs)} run(s), {parallel} at a time"
              + (f" on GPUs {','.join(gpus)}" if gpus else " (CPU processes)"), flush=True)
    _write_manifest(sweep_dir, args, declared, runs, jobs)
    outcomes = Launcher(jobs, parallel, gpus, skip_finished=not (args.rerun or args.tpu_hosts),
                         pin_cpus=not args.no_pin).run()
    outcomes = per_run_outcomes(outcomes)
    print_summary(outcomes)

    if not args.no_report and not args.tpu_hosts and not is_url(sweep_dir) and os.path.isdir(sweep_dir):
        try:
            from jaxvae.sweeps import report  # noqa: PLC0415 - keep this module import-light
            text = report.write_report(sweep_dir, verbose=False)
            print("\n" + text)
        except Exception as e:  # noqa: BLE001 - a report problem must not hide the sweep's result
            print(f"warning: report failed: {type(e).__name__}: {e}", file=sys.stderr)

    states = {o.state for o in outcomes}
    if "failed" in states:
        return 1
    if states & {"preempted", "not started"}:
        return EXIT_PREEMPTED
    return 0


def _vectorize_setting(args, runner: str) -> int | None:
    """The group-size cap: --no-vectorize -> None; --vectorize N -> N (None for N <= 1); by default (only
    with the default runner module) DEFAULT_VECTORIZE where the runs get an accelerator: local runs on a
    GPU/TPU host, --slurm launches whose sbatch options request GPUs (the submitting login node usually has
    none, so its own devices say nothing), --tpu-hosts launches; otherwise None (one process per run)."""
    if args.no_vectorize:
        return None
    if args.vectorize is not None:
        return args.vectorize if args.vectorize > 1 else None
    if runner != DEFAULT_RUNNER:
        return None
    # Default on accelerators only: on a CPU one run of these models already keeps the cores busy, and the
    # vmapped program measured slower than sequential runs (docs/vectorized.md).
    if args.slurm:
        return DEFAULT_VECTORIZE if slurm_requests_gpus(args) else None
    if args.tpu_hosts:
        return DEFAULT_VECTORIZE
    return DEFAULT_VECTORIZE if has_accelerator() else None


_SLURM_GPU_COUNT_FLAGS = ("--gpus", "--gpus-per-node", "--gpus-per-task", "--gpus-per-socket", "-G")


def _gpu_count(spec: str) -> int:
    """``1``, ``a100:2``, ``gpu:a100:2``, ``gpu`` (one) -> the count (0 for ``0``/``a100:0``)."""
    last = spec.strip().rsplit(":", 1)[-1]
    return int(last) if last.isdigit() else 1


def slurm_requests_gpus(args) -> bool:
    """Do the sbatch options ask for GPUs: --gpus-per-task=N (N > 0), or --sbatch-arg with --gpus,
    --gpus-per-node/-task/-socket, -G, --gres=gpu[:type][:N] or --tres-per-task=gres/gpu...?"""
    if args.gpus_per_task not in (None, "") and _gpu_count(str(args.gpus_per_task)) > 0:
        return True
    for extra in args.sbatch_arg or []:
        m = re.match(r"\s*(--?[A-Za-z-]+)(?:=|\s+)(\S+)", extra)
        if not m:
            continue
        flag, value = m.groups()
        if flag in _SLURM_GPU_COUNT_FLAGS and _gpu_count(value) > 0:
            return True
        if flag in ("--gres", "--tres-per-task", "--tres-per-node"):
            for item in value.split(","):
                item = item.split("/", 1)[-1]  # gres/gpu:2 -> gpu:2
                if (item == "gpu" or item.startswith(("gpu:", "gpu="))) and _gpu_count(
                        item.replace("=", ":")) > 0:
                    return True
    return False


def has_accelerator() -> bool:
    """A GPU (CUDA_VISIBLE_DEVICES / nvidia-smi) or a TPU (/dev/accel*, /dev/vfio) on this host."""
    import glob

    return bool(visible_gpus() or glob.glob("/dev/accel*") or os.environ.get("TPU_NAME"))


def _config_defaults(experiment: str) -> dict | None:
    """The experiment's config as {dotted path: value} (None when it cannot be loaded here)."""
    path, arg = split_config_arg(experiment)
    try:
        module = load_module(path)
        config = call_sweep_function(module.get_config, arg)
    except Exception:  # noqa: BLE001 - grouping then treats fields set by only some runs as different
        return None

    def flat(node, prefix=""):
        out = {}
        for k, v in node.items():
            if hasattr(v, "items"):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
        return out

    try:
        return flat(config)
    except Exception:  # noqa: BLE001
        return None


def _write_manifest(sweep_dir: str, args, declared: Sequence[str], runs: Sequence[Run],
                    jobs: Sequence[Job]) -> None:
    """ROOT/<stem>/sweep.json: the planned runs, so the report can list runs that never started.

    Entries of earlier launches stay (a launch with --only adds its runs to the others'), except runs the
    experiment no longer declares (``declared``: every run name of its current sweep): after a change to the
    sweep, the runs of its old form are not reported as "not started"."""
    if is_url(sweep_dir):
        return
    os.makedirs(sweep_dir, exist_ok=True)
    path = os.path.join(sweep_dir, "sweep.json")
    old = read_json(path) or {}
    order = {name: i for i, name in enumerate(declared)}
    known = {r["name"]: r for r in old.get("runs", [])
             if isinstance(r, dict) and r.get("name") in order}
    job_of = {r.name: j for j in jobs for r in j.runs}
    for r in runs:
        j = job_of.get(r.name)
        if j is None:
            continue
        known[r.name] = {"name": r.name, "index": r.index,
                         "overrides": {k: (list(v) if isinstance(v, tuple) else v) for k, v in r.overrides.items()},
                         "command": shlex.join(j.argv)}
    write_json(path, {"experiment": args.experiment, "updated": now_iso(),
                      "runs": sorted(known.values(), key=lambda r: order[r["name"]])})


if __name__ == "__main__":
    sys.exit(main())
