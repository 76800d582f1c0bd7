"""``python -m fitter_backend``: see :mod:`fitter_backend.cli`."""
import sys

from fitter_backend.cli import main

sys.exit(main())
