"""``python -m gptref`` is the ``gptref`` command."""

import sys

from gptref.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
