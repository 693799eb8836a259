"""Running a sweep elsewhere: a Slurm array script (one task per job) and gcloud commands for TPU VMs."""


from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from jaxvae.experiment.protocol import EXIT_PREEMPTED
from jaxvae.sweeps.plan import (Job)

# ----------------------------------------------------------------------------------------------------
# Slurm and TPU VMs
# ----------------------------------------------------------------------------------------------------


def slurm_script(jobs: Sequence[Job], sweep_dir: str, args, cwd: str | None = None) -> str:
    cwd = os.path.abspath(cwd or os.getcwd())
    log_dir = os.path.abspath(os.path.join(sweep_dir, "slurm"))
    n = len(jobs)
    array = f"0-{n - 1}" + (f"%{args.parallel}" if args.parallel else "")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={args.job_name or 'jaxvae-' + os.path.basename(sweep_dir)}",
        f"#SBATCH --array={array}",
        f"#SBATCH --output={log_dir}/%A_%a.out",
        f"#SBATCH --chdir={cwd}",
        "#SBATCH --ntasks=1",
    ]
    for flag in ("partition", "time", "mem", "cpus_per_task", "gpus_per_task"):
        value = getattr(args, flag)
        if value not in (None, ""):
            lines.append(f"#SBATCH --{flag.replace('_', '-')}={value}")
    if args.requeue:
        lines += ["#SBATCH --requeue", "#SBATCH --signal=B:TERM@120"]
    for extra in args.sbatch_arg or []:
        lines.append(f"#SBATCH {extra}")
    runs = sum(len(j.runs) for j in jobs)
    groups = sum(len(j.runs) > 1 for j in jobs)
    first, k = [], 0
    for j in jobs:
        first.append(k)
        k += len(j.runs)
    lines += [
        "",
        f"# Written by: {shlex.join(['python', '-m', 'jaxvae.sweeps'] + list(args.argv))}",
        f"# {n} array tasks for {runs} run(s), one task per process: a single run (jaxvae.main) or a vectorized",
        f"# group of runs (jaxvae.experiment.vectorized; {groups} task(s) here). Task i runs COMMANDS[i]; its runs' workdirs are",
        "# WORKDIRS[FIRST[i]] .. WORKDIRS[FIRST[i]+COUNT[i]-1] and its output is appended to the first one's",
        "# log.txt. " + ("A task whose runs all finished exits at once; an unfinished (or partly finished) one"
                         if not args.rerun else "(--rerun) Every task runs, even when its runs finished; each"),
        "# runs its command again, which resumes the unfinished runs from their checkpoints.",
        "set -uo pipefail",
        "",
        "WORKDIRS=(",
        *[f"  {shlex.quote(r.workdir)}" + (f"  # task {t}" if i == 0 else "")
          for t, j in enumerate(jobs) for i, r in enumerate(j.runs)],
        ")",
        f"FIRST=({' '.join(map(str, first))})",
        f"COUNT=({' '.join(str(len(j.runs)) for j in jobs)})",
        "COMMANDS=(",
        *[f"  {shlex.quote(shlex.join(j.argv))}" for j in jobs],
        ")",
        "",
        "finished() {  # as jaxvae.sweeps.is_finished: results.json present and the run's status is finished",
        '  [[ -f "$1/results.json" ]] || return 1',
        '  local f="$1/status.json"',
        '  [[ -f "$f" ]] || f="$1/results.json"',
        '  grep -Eq \'"status" *: *"finished"\' "$f"',
        "}",
        "",
        'i="${SLURM_ARRAY_TASK_ID:?submit this script with sbatch (it is an array job)}"',
        'members=("${WORKDIRS[@]:${FIRST[$i]}:${COUNT[$i]}}")',
        'log="${members[0]}/log.txt"',
        "nfinished=0",
        'for w in "${members[@]}"; do',
        '  mkdir -p "$w"',
        '  if finished "$w"; then nfinished=$((nfinished + 1)); fi',
        "done",
    ]
    if not args.rerun:
        lines += [
            'if [[ $nfinished -eq ${#members[@]} ]]; then',
            '  echo "already finished: ${members[*]}"',
            "  exit 0",
            "fi",
        ]
    lines += [
        'echo "task $i on $(hostname): ${COMMANDS[$i]}"',
        'echo "log: $log"',
        'if [[ ${#members[@]} -gt 1 ]]; then',
        '  echo "vectorized group of ${#members[@]} runs, $nfinished of them finished already"',
        "fi",
        'echo "=== $(date -Is) slurm ${SLURM_ARRAY_JOB_ID:-?}_$i on $(hostname): ${COMMANDS[$i]}" >> "$log"',
        'for w in "${members[@]:1}"; do  # the other members of a group: where their log is',
        '  echo "=== $(date -Is) slurm ${SLURM_ARRAY_JOB_ID:-?}_$i on $(hostname): trained in a vectorized group'
        ' of ${#members[@]} runs; log: $log" >> "$w/log.txt"',
        "done",
        'eval "${COMMANDS[$i]}" >> "$log" 2>&1 &',
        "pid=$!",
        "# Forward SIGTERM (preemption, --signal=B:TERM@...) to the run: it checkpoints and exits 3.",
        'trap \'echo "SIGTERM: asking the run to checkpoint"; kill -TERM "$pid" 2>/dev/null\' TERM',
        'wait "$pid"; rc=$?',
        'while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done',
        'echo "exit code $rc"',
    ]
    if args.requeue:
        lines += [
            f"if [[ $rc -eq {EXIT_PREEMPTED} ]]; then",
            '  echo "preempted: requeueing ${SLURM_ARRAY_JOB_ID}_$i"',
            '  scontrol requeue "${SLURM_ARRAY_JOB_ID}_$i"',
            "fi",
        ]
    lines += ['exit "$rc"', ""]
    return "\n".join(lines)


def tpu_command(job: Job, args) -> list[str]:
    """``gcloud compute tpus tpu-vm ssh NAME --worker=all --command='cd DIR && python3 -m ...'``: the
    same process (a run, or a vectorized group of runs) started on every host of a multi-host TPU VM (the
    repo must be checked out at ``--tpu-remote-dir`` on every host, and ``--root`` should be a shared path,
    e.g. gs://bucket/runs). The command is ``shlex``-quoted, so ``--overrides='[...]'`` reaches the remote
    shell intact."""
    remote = f"cd {args.tpu_remote_dir} && {shlex.join(job.argv)}"
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu_hosts, "--worker=all"]
    if args.tpu_zone:
        cmd.append(f"--zone={args.tpu_zone}")
    if args.tpu_project:
        cmd.append(f"--project={args.tpu_project}")
    cmd.append(f"--command={remote}")
    return cmd


