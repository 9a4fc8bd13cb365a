"""`python -m mlxlab` runs the CLI."""

import sys

from mlxlab.cli import main

sys.exit(main())
