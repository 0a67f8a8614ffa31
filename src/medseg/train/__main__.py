"""``python -m medseg.train CONFIG.yaml ...`` (also under ``torchrun ... -m medseg.train``)."""

import sys

from medseg.train.cli import main

sys.exit(main())
