"""One entry point for every head model a user can name: ``open``, a FLAME pickle, or a
head-model ``.npz`` written by this project."""
from __future__ import annotations

from pathlib import Path

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.head_model import HeadModel


def load_head_model(spec: str | Path) -> HeadModel:
    """``"open"`` for the open head, else a path to FLAME ``.pkl`` or a facecap ``.npz``."""
    if str(spec) == "open":
        from fitter_backend.head_models.open_head import load_open_head
        return load_open_head()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise HeadModelError(f"head model {spec!r}: no such file (expected 'open', a FLAME .pkl or a .npz)")
    if path.suffix == ".pkl":
        from fitter_backend.head_models.flame import load_flame
        return load_flame(path)
    if path.suffix == ".npz":
        return HeadModel.load_npz(path)
    raise HeadModelError(f"head model {path}: expected a FLAME .pkl or a facecap head-model .npz, "
                         f"not a {path.suffix or 'suffix-less'} file")
