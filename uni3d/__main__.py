"""``python -m uni3d`` runs the CLI."""

import sys

from uni3d.cli.main import main

sys.exit(main())
