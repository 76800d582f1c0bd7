"""``python -m fitter_backend.server``: the backend process the Blender add-on starts."""
import sys

from fitter_backend.server.server import main

sys.exit(main())
