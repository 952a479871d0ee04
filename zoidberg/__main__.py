"""Entry point of `python -m zoidberg`."""

import sys

from zoidberg.cli import main

if __name__ == "__main__":
    sys.exit(main())
