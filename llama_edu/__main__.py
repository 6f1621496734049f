"""`python -m llama_edu train ...` and `python -m llama_edu generate ...` (see llama_edu.cli)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
