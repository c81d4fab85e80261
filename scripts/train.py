#!/usr/bin/env python3
"""Train an MLP with nnx: ``python scripts/train.py --help``.

Works from a source checkout without installing: the repository root is put
on the import path.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nnx.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
