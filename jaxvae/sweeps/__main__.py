"""``python -m jaxvae.sweeps experiments/X.py [flags]`` (what ./launch.sh runs)."""

import sys

from jaxvae.sweeps.cli import main

sys.exit(main())
