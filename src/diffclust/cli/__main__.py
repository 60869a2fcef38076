"""`python -m diffclust.cli` (what torchrun and accelerate launch run)."""

import sys

from diffclust.cli.main import main

if __name__ == "__main__":  # importing it (documentation tools do) runs nothing
    sys.exit(main())
