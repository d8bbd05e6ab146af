"""``python -m napari_cryodrgn`` (and ``torchrun -m napari_cryodrgn train ...``)."""

import sys

from .cli import main

sys.exit(main())
