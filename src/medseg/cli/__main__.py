"""``python -m medseg.cli``: the ``medseg`` command."""

import sys

from .parser import main

sys.exit(main())
