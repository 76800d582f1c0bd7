"""The benchmark's problems: synthetic shots with ground truth on two head models.

- ``open_mono``: the open head, one camera of unknown focal length;
- ``flame_mono``: a FLAME-format model with random bases (written by
  :mod:`fitter_backend.head_models.synthetic_flame`, read by ``load_flame``), one camera;
- ``open_4cam``: the open head seen by 4 cameras with known extrinsics;
- ``open_4cam_free``: the same with the extrinsics of cameras 1-3 unknown.

Every shot (:func:`fitter_backend.fitting.synthetic.make_shot`) has talking-style
expressions, a +-60 degree yaw sweep, 1.5 px landmark noise and 5% outliers whose sigma is
inflated to match their error; focal lengths are always unknown to the fitter.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from fitter_backend.fitting.problem import Observations, Parameters
from fitter_backend.fitting.synthetic import SyntheticShot, area_sampled_points, make_shot
from fitter_backend.head_models.head_model import HeadModel

PROBLEMS = {
    "open_mono": "open head, monocular",
    "flame_mono": "FLAME-format head (random bases), monocular",
    "open_4cam": "open head, 4 cameras, extrinsics known",
    "open_4cam_free": "open head, 4 cameras, extrinsics unknown",
}


@dataclasses.dataclass
class Problem:
    key: str
    title: str
    shot: SyntheticShot

    @property
    def monocular(self) -> bool:
        return self.shot.cameras.count == 1


def flame_model(num_identity: int, num_expression: int, seed: int) -> HeadModel:
    """A FLAME-format model with random bases, written as a FLAME 2023 Open pickle and read
    back through the FLAME loader (so the benchmark also covers the conversion)."""
    from fitter_backend.head_models.flame import load_flame
    from fitter_backend.head_models.synthetic_flame import write_flame_pickle

    with tempfile.TemporaryDirectory(prefix="facecap-bench-") as folder:
        path = write_flame_pickle(Path(folder) / "flame2023_Open.pkl", style="plain_py3", seed=seed)
        return load_flame(path, num_identity=num_identity, num_expression=num_expression, use_cache=False)


def make_problems(keys: tuple[str, ...], frames: int, landmarks: int, seed: int, flame_identity: int,
                  flame_expression: int, cameras: int = 4) -> list[Problem]:
    """The shots of ``keys`` (in that order); each model is built once."""
    models: dict[str, HeadModel] = {}

    def model_for(key: str) -> HeadModel:
        name = "flame" if key.startswith("flame") else "open"
        if name not in models:
            if name == "flame":
                models[name] = flame_model(flame_identity, flame_expression, seed)
            else:
                from fitter_backend.head_models.open_head import load_open_head
                models[name] = load_open_head()
        return models[name]

    problems = []
    for key in keys:
        model = model_for(key)
        points = area_sampled_points(model, landmarks, seed=seed)
        multi_view = key.startswith("open_4cam")
        shot = make_shot(model, points, num_frames=frames, num_cameras=cameras if multi_view else 1, seed=seed,
                         extrinsics_known=key != "open_4cam_free")
        title = PROBLEMS[key].replace("4 cameras", f"{cameras} cameras")
        problems.append(Problem(key, title, shot))
    return problems


def first_frames(shot: SyntheticShot, count: int) -> SyntheticShot:
    """The shot cut to its first ``count`` frames."""
    obs, truth = shot.observations, shot.truth
    return SyntheticShot(shot.model, shot.landmarks,
                         Observations(obs.mu_px[:count], obs.sigma_px[:count]), shot.cameras,
                         Parameters(truth.identity, truth.expression[:count], truth.rotations[:count],
                                    truth.translation_m[:count], truth.cameras))
