"""Many shots on Ray: ``python -m fitter_backend batch SHOTS --out DIR`` (docs/batch.md).

shots        the shot list (JSON or TOML): parsing and validation, before any work
cache_key    what makes a finished result reusable: the inputs' sha256 plus the options
driver       the Ray driver: one task per shot, retries, cancellation, the manifest
progress     progress across shots (terminal or JSON lines) and the summary table
"""
