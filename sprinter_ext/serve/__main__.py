"""``python -m sprinter_ext.serve``: the same as ``python -m sprinter_ext serve``."""

import sys

from .cli import main

sys.exit(main())
