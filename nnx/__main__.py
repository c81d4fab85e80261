"""``python -m nnx``: the training command."""

import sys

from .cli import main

sys.exit(main())
