"""``python -m segfix ...`` (and ``torchrun -m segfix train ...``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
