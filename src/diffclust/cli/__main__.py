"""`python -m diffclust.cli` (what torchrun and accelerate launch run)."""

import sys

from diffclust.cli.main import main

sys.exit(main())
