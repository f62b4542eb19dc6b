"""`python -m rr ...` runs the command line, as the `rr` script does."""

import sys

from rr.cli import app

if __name__ == "__main__":
    sys.exit(app())
