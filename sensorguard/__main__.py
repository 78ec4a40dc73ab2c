"""``python -m sensorguard``: the same command line as the ``sensorguard`` script."""

import sys

from sensorguard.cli import main

if __name__ == "__main__":  # not when a worker process (spawn) imports it
    sys.exit(main())
