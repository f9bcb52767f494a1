"""``python -m geoseg`` runs the command line."""

import sys

from geoseg.cli import main

sys.exit(main())
