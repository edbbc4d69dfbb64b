"""`python -m icl_audio ...` (used by torchrun for multi-process benchmarks)."""

import sys

from icl_audio.cli import main

sys.exit(main())
