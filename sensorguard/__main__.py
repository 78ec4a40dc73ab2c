"""``python -m sensorguard``: the same command line as the ``sensorguard`` script."""

import sys

from sensorguard.cli import main

sys.exit(main())
