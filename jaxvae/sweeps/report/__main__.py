"""``python -m jaxvae.sweeps.report RUNS_DIR [flags]`` (jaxvae.sweeps.report.cli)."""

import sys

from jaxvae.sweeps.report.cli import main

sys.exit(main())
