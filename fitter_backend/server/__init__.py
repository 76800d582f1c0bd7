"""The backend process the Blender add-on talks to: JSON lines over stdin/stdout
(:mod:`.protocol`), one fit job at a time in a worker thread (:mod:`.runner`, :mod:`.server`).
Run it with ``python -m fitter_backend.server``."""
