"""`python -m courier ...`: the same as the `courier` command."""

import sys

from .cli import main

sys.exit(main())
