"""Import a finished fit into a new .blend and export it as FBX, without Blender's UI.

    python -m blender_addon.headless RESULT_DIR --blend OUT.blend --fbx OUT.fbx [--preset UNITY]

Run with a Python that has Blender as a module (``bpy``), e.g. ``.venvs/blender/bin/python``
from the repository root. The work is the add-on's own: ``importer.import_result`` and
``fbx_export.export_fbx``.
"""
import argparse
import sys
from pathlib import Path

import bpy

from . import fbx_export, importer, results


def build_blend(result_dir: Path, blend_path: Path, fbx_path: Path | None, preset: str = "UNITY") -> str:
    """A fresh scene with the fit imported (keys from frame 1), saved and exported; returns a summary."""
    result = results.read_result(result_dir)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    report = importer.import_result(scene, result, take=result_dir.name, frame_offset=1)
    blend_path.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(blend_path.resolve()))
    lines = [f"blend: {blend_path} (frames {report.frame_start}-{report.frame_end}, "
             f"{len(report.actions)} actions, imported in {report.seconds:.2f} s)"]
    if fbx_path is not None:
        written = fbx_export.export_fbx(bpy.context, report.armature, fbx_path, preset)
        lines.append(f"fbx: {written} ({preset} preset)")
    return "\n".join(lines + [f"note: {n}" for n in report.notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blender_addon.headless", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result_dir", type=Path, help="a finished result folder (with result.json)")
    parser.add_argument("--blend", type=Path, required=True)
    parser.add_argument("--fbx", type=Path)
    parser.add_argument("--preset", default="UNITY", choices=sorted(fbx_export.PRESETS))
    args = parser.parse_args(argv)
    try:
        print(build_blend(args.result_dir, args.blend, args.fbx, args.preset))
    except (results.ResultError, fbx_export.ExportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
