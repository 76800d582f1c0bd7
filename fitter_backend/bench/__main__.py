import sys

from fitter_backend.bench.cli import main

sys.exit(main())
