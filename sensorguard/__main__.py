"""``python -m sensorguard``: the same command line as the ``sensorguard`` script."""

import sys

from sensorguard.service.cli import main

sys.exit(main())
