"""Sweeps and the report: the third layer (imports neither the maths nor the runner at import time).

    declare.py   product / zipped / chain (what experiment files import); the vectorizable fields are
                 jaxvae.experiment.protocol's (re-exported here)
    plan.py      loading an experiment file, run names and workdirs, jobs and vectorized groups, run state
    local.py     running jobs on this machine (--parallel, GPU/CPU slots, logs, summary)
    cluster.py   Slurm array scripts and TPU-VM gcloud commands
    cli.py       ./launch.sh == python -m jaxvae.sweeps
    report/      python -m jaxvae.sweeps.report RUNS_DIR: tables, plots, report.html (a package: loading,
                 layout, tables, plots, beta, paper_tables, html_table, html_page, build, cli)
"""

from jaxvae.experiment.protocol import (VECTORIZED_FIELDS, VECTORIZED_HOST_FIELDS, VECTORIZED_TRACED_FIELDS,
                                       is_vectorizable_field)
from jaxvae.sweeps.declare import chain, normalize_sweep, product, zipped
from jaxvae.sweeps.plan import Job, Run, flag_value, group_runs, make_runs, plan_jobs, run_names
from jaxvae.sweeps.declare import MAX_NAME_LEN
from jaxvae.sweeps.cli import build_parser, main, slurm_requests_gpus

__all__ = ["chain", "product", "zipped", "normalize_sweep", "is_vectorizable_field", "VECTORIZED_FIELDS",
           "VECTORIZED_HOST_FIELDS", "VECTORIZED_TRACED_FIELDS", "Job", "Run", "flag_value", "group_runs",
           "make_runs", "plan_jobs", "run_names", "MAX_NAME_LEN", "build_parser", "main", "slurm_requests_gpus"]
