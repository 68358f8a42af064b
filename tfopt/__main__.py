"""``python -m tfopt``: the ``tfopt`` command (see ``tfopt.cli``)."""

import sys

from tfopt.cli import main

if __name__ == "__main__":
    sys.exit(main())
