"""Look at a head model: ``python -m fitter_backend.render {showcase,png,obj} --out PATH ...``.

  showcase  captioned grid: neutral, jawOpen = 1, mouthSmileLeft = 1, one random identity
  png       one clay render with the given parameters
  obj       the posed mesh as a Wavefront OBJ (opens in Blender, MeshLab, any viewer)

Parameters: ``--expression jawOpen=1 --expression mouthSmileLeft=0.5``,
``--joint jaw=0.2,0,0`` (axis-angle, radians), ``--identity-seed 3`` (a draw from the
identity prior). The model is the open head unless ``--model FILE.npz`` names another.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fitter_backend.errors import FacecapError
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.obj_io import write_obj
from fitter_backend.render.head_png import (posed_mesh, render_grid_png, render_head_png, sample_identity,
                                            showcase_panels)
from fitter_backend.render.shading import vertex_normals


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _parse_parameters(args: argparse.Namespace, model: HeadModel) -> dict:
    try:
        expression = {name: float(value) for name, value in args.expression}
        joints = {name: [float(x) for x in value.split(",")] for name, value in args.joint}
    except ValueError as exc:
        raise FacecapError(f"--expression takes NAME=NUMBER and --joint NAME=X,Y,Z ({exc})") from None
    for name, rotvec in joints.items():
        if len(rotvec) != 3:
            raise FacecapError(f"--joint {name}= needs three comma-separated numbers (axis-angle), got {rotvec}")
    identity = None
    if args.identity_seed is not None:
        identity = sample_identity(model, np.random.default_rng(args.identity_seed))
    return {"identity": identity, "expression": expression, "joint_rotations": joints}


def _load_model(path: Path | None) -> HeadModel:
    if path is not None:
        return HeadModel.load_npz(path)
    from fitter_backend.head_models.open_head import load_open_head
    return load_open_head()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fitter_backend.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("showcase", "png", "obj"))
    parser.add_argument("--out", type=Path, required=True, help="file to write (.png or .obj)")
    parser.add_argument("--model", type=Path, help="head model .npz (default: the open head)")
    parser.add_argument("--expression", type=_key_value, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--joint", type=_key_value, action="append", default=[], metavar="NAME=X,Y,Z")
    parser.add_argument("--identity-seed", type=int, help="draw the identity from the prior with this seed")
    parser.add_argument("--seed", type=int, default=0, help="showcase: seed of the random identity")
    parser.add_argument("--size", type=int, help="image side in pixels (png 512, showcase 384)")
    parser.add_argument("--yaw", type=float, default=25.0, help="degrees, > 0 looks from the subject's left")
    parser.add_argument("--pitch", type=float, default=5.0, help="degrees, > 0 looks from above")
    parser.add_argument("--points", action="store_true", help="draw the iBUG-68 points")
    parser.add_argument("--normals", action="store_true", help="obj: also write vertex normals")
    args = parser.parse_args(argv)
    try:
        model = _load_model(args.model)
        view = {"yaw_deg": args.yaw, "pitch_deg": args.pitch, "points": args.points}
        if args.command == "showcase":
            out = render_grid_png(model, args.out, showcase_panels(model, args.seed), size=args.size or 384, **view)
        elif args.command == "png":
            out = render_head_png(model, args.out, **_parse_parameters(args, model), size=args.size or 512, **view)
        else:
            vertices = posed_mesh(model, **_parse_parameters(args, model))
            normals = vertex_normals(vertices, model.triangles) if args.normals else None
            out = write_obj(args.out, vertices, model.triangles, normals)
    except FacecapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
