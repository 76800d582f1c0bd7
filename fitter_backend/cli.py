"""Command line: ``python -m fitter_backend COMMAND ...`` (run ``--help`` on any command).

  setup                    build what the backend needs (open head, face models) in the data folder
  fit VIDEO [VIDEO ...] --out DIR
                           the end-to-end job: decode, ROI, landmarks, fit, previews
  batch SHOTS --out DIR    many shots (a JSON or TOML list) on Ray, locally or on a cluster (docs/batch.md)
  demo [VIDEO] [--out DIR] the main job on the embedded default head, on VIDEO or a rendered sample clip
  serve                    the Blender add-on's backend process (JSON lines, docs/protocol.md)
  head-model info SPEC     vertex/channel counts and sizes of a head model
  head-model build         (re)build the open head
  head-model obj|png|showcase --out FILE [...]
                           look at a head model with given parameters (OBJ or a PNG render)

SPEC is ``open`` (the embedded default), a FLAME ``.pkl`` or a head-model ``.npz``.
Errors are reported as one line, ``error: ...``, with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


from fitter_backend.batch.command import add_batch_command
from fitter_backend.errors import FacecapError
from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.interrupts import interrupt_on_signals
from fitter_backend.landmarks import BOOTSTRAP_LANDMARKS, DEFAULT_LANDMARKS, DENSE_LANDMARKS, IRIS_LIDS_LANDMARKS
from fitter_backend.models import DEVICES


def head_model_summary(model: HeadModel) -> str:
    """A few lines a person can read: counts, size in centimetres, names."""
    extent_cm = 100 * (model.template.max(0) - model.template.min(0))
    lines = [
        f"head model: {model.name}",
        f"  vertices {model.num_vertices}, triangles {len(model.triangles)}",
        f"  identity components {model.num_identity}, expression channels {model.num_expression}, "
        f"pose correctives {model.pose_correctives.shape[2]}",
        f"  joints ({model.num_joints}): {', '.join(model.joint_names)}",
        f"  size (width x height x depth): {extent_cm[0]:.1f} x {extent_cm[1]:.1f} x {extent_cm[2]:.1f} cm",
        f"  eyeball radii: {', '.join(f'{1000 * r:.1f} mm' for r in model.eyeball_radii_m)}",
        f"  regions: {', '.join(f'{k} ({int(v.sum())})' for k, v in model.regions.items())}",
        f"  semantic points: {len(model.semantic_points)} (iBUG-68 included)",
        f"  expression channels: {', '.join(model.expression_names[:8])}"
        + (", ..." if model.num_expression > 8 else ""),
    ]
    return "\n".join(lines)


def _setup(args: argparse.Namespace) -> int:
    from fitter_backend.head_models.open_head import build_open_head
    from fitter_backend.model_setup import ensure_mediapipe_models

    def progress(message: str) -> None:
        print(f"  {message}", flush=True)

    print(f"open head: {build_open_head(force=args.force, progress=progress)}")
    models = ensure_mediapipe_models(progress=progress)
    print("face models: " + ", ".join(f"{name} {path}" for name, path in models.items()))
    # Where the landmark models' points lie on each head: computed here, once, so a fit only loads it.
    from fitter_backend.head_models.loading import load_head_model
    from fitter_backend.landmarks import load_landmarker
    from fitter_backend.landmarks.embedding import landmark_embedding
    # Every landmark model the protocol, the add-on and `fit --landmarks` name (the dense network
    # carries its own).
    landmarkers = {name: load_landmarker(name, progress=progress)
                   for name in (DEFAULT_LANDMARKS, IRIS_LIDS_LANDMARKS, BOOTSTRAP_LANDMARKS)}
    for spec in ("open", *getattr(args, "head", [])):
        model = load_head_model(spec)
        for name, landmarker in landmarkers.items():
            points = landmark_embedding(model, landmarker, progress=progress)
            print(f"landmark embedding: {name} on {model.name} ({len(points.names)} points)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: the open head fitted to the user's video or to
    a clip the project renders itself."""
    from fitter_backend.export.result_files import finish_video_result
    from fitter_backend.head_models.open_head import load_open_head
    from fitter_backend.pipeline import FitJob, fit_videos
    from fitter_backend.render.head_png import render_grid_png, showcase_panels
    from fitter_backend.sample_clip import render_sample_clip

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_open_head()
    print(head_model_summary(model))
    showcase = render_grid_png(model, out / "open_head_showcase.png", showcase_panels(model, 0), size=384)
    print(f"render (neutral, jawOpen, mouthSmileLeft, a random identity): {showcase}")
    if args.video:
        video = Path(args.video)
    else:
        video = out / "sample_clip.mp4"
        if not video.is_file():
            print(f"rendering a sample clip (a synthetic actor talking and turning): {video}", flush=True)
            render_sample_clip(model, video)
    result = fit_videos(FitJob(videos=(video,), out=out / "fit"), progress=TerminalProgress("bar"))
    finish_video_result(result, model, {"source": {"kind": "video", "paths": [str(video)]}, "mode": "offline",
                                        "head": "open"})
    report = json.loads((result / "report.json").read_text())
    print(f"fitted {report['frames_fitted']} of {report['frames']} frames of {video} in "
          f"{report['timings']['total_s']:.1f} s; median normalised residual {report['fit']['median_frame_rms']:.2f}")
    print(f"results: {result} (fit.npz, fit.json, landmarks.npz, rig.npz, animation.npz, report.json, previews/)")
    return _blend_and_fbx(result, out / "facecap_demo.blend", out / "facecap_demo.fbx")


def _blend_and_fbx(result: Path, blend: Path, fbx: Path) -> int:
    """The keyed rig as a .blend and an FBX, built by the add-on's importer in Blender's own
    environment (``.venvs/blender``: bpy as a module)."""
    root = Path(__file__).resolve().parents[1]
    blender_python = root / ".venvs" / "blender" / "bin" / "python"
    if not blender_python.is_file():
        raise FacecapError(f"the Blender environment {blender_python.parent.parent} is missing: "
                           "run ./run.sh demo (it sets it up) to get the .blend and .fbx")
    print("importing the fit into Blender (keyed rig, camera) and exporting FBX ...", flush=True)
    done = subprocess.run([str(blender_python), "-m", "blender_addon.headless", str(result.resolve()),
                           "--blend", str(blend.resolve()), "--fbx", str(fbx.resolve())],
                          cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise FacecapError(f"Blender could not import {result}: {(done.stderr or done.stdout).strip()[-800:]}")
    print("\n".join(line for line in done.stdout.splitlines() if line.startswith(("blend:", "fbx:", "note:"))))
    return 0


def _head_model(args: argparse.Namespace) -> int:
    from fitter_backend.head_models.loading import load_head_model
    if args.action == "build":
        return _setup(args)
    if args.action == "info":
        print(head_model_summary(load_head_model(args.spec)))
        return 0
    from fitter_backend.render.__main__ import main as render_main
    return render_main([args.action, *args.render_args])


class TerminalProgress:
    """A progress line with ETA on a terminal, or JSON lines (``--progress json``) for tools."""

    def __init__(self, style: str):
        self.style = style
        self.started = time.perf_counter()
        self.last_print = 0.0
        self.last_stage = ""

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        now = time.perf_counter()
        elapsed = now - self.started
        eta_s = elapsed * (1 - fraction) / fraction if fraction > 0.01 else None
        if self.style == "json":
            print(json.dumps({"type": "progress", "stage": stage, "fraction": round(fraction, 4),
                              "eta_s": None if eta_s is None else round(eta_s, 1), "message": message}),
                  flush=True)
            return
        if not sys.stderr.isatty():  # a log file: one line per stage, no carriage returns
            if stage != self.last_stage:
                print(f"  {stage} ...", file=sys.stderr, flush=True)
                self.last_stage = stage
            return
        if now - self.last_print < 0.2 and stage != "done":
            return
        self.last_print = now
        eta = "" if eta_s is None else f"  ETA {eta_s:4.0f} s"
        bar = "#" * int(30 * fraction)
        line = f"\r[{bar:<30}] {100 * fraction:5.1f}%  {stage:<10}{eta}  {message[:40]:<40}"
        print(line, end="\n" if stage == "done" else "", file=sys.stderr, flush=True)


def _fit(args: argparse.Namespace) -> int:
    from fitter_backend.pipeline import FitJob, fit_videos
    frame_range = None
    if args.start is not None or args.stop is not None:
        frame_range = (args.start or 0, args.stop)
    job = FitJob(videos=tuple(Path(v) for v in args.videos), out=Path(args.out), head=args.head,
                 calibration=Path(args.camera) if args.camera else None, realtime=args.realtime,
                 frame_range=frame_range, stride=args.stride, landmarks=args.landmarks, device=args.device,
                 previews=not args.no_previews, pupil_distance_mm=args.pupil_distance_mm)
    out = fit_videos(job, progress=TerminalProgress(args.progress))
    report = json.loads((out / "report.json").read_text())
    if args.progress == "json":  # tools read stdout line by line: the summary is JSON too
        print(json.dumps({"type": "result", "out": str(out), "frames": report["frames"],
                          "frames_fitted": report["frames_fitted"], "frames_flagged": len(report["frames_flagged"]),
                          "total_s": round(report["timings"]["total_s"], 2), "notes": report["notes"]}), flush=True)
        return 0
    print(f"fitted {report['frames_fitted']} of {report['frames']} frames "
          f"({len(report['frames_flagged'])} flagged) in {report['timings']['total_s']:.1f} s: {out}")
    for note in report["notes"]:
        print(f"  note: {note}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from fitter_backend.server.server import main as serve_main
    return serve_main()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fitter_backend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("setup", help="build what the backend needs (idempotent)")
    setup.add_argument("--force", action="store_true", help="rebuild even when up to date")
    setup.add_argument("--head", action="append", default=[], metavar="SPEC",
                       help="also place the landmark models on this head model (a FLAME .pkl or a .npz); repeatable")
    setup.set_defaults(run=_setup)
    demo = commands.add_parser("demo", help="the main job on the embedded default")
    demo.add_argument("video", nargs="?", help="your video (default: a sample clip rendered by the project)")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.set_defaults(run=_demo)
    fit = commands.add_parser("fit", help="fit videos: decode, ROI, landmarks, fit, previews",
                              description="Fit one video, or several synchronised videos with --camera "
                                          "calib.json. Writes landmarks.npz, fit.npz, fit.json, report.json "
                                          "and previews/ into --out (atomically).")
    fit.add_argument("videos", nargs="+", help="video files or image sequences (one per camera)")
    fit.add_argument("--out", required=True, help="result folder (replaced only when the job succeeds)")
    fit.add_argument("--head", default="open", help="open (default) or a FLAME .pkl")
    fit.add_argument("--camera", help="calibration JSON (docs/landmark_models.md)")
    fit.add_argument("--realtime", action="store_true", help="frame-by-frame real-time mode")
    fit.add_argument("--start", type=int, help="first frame (default 0)")
    fit.add_argument("--stop", type=int, help="frame to stop before (default: the end)")
    fit.add_argument("--stride", type=int, default=1, help="use every n-th frame")
    fit.add_argument("--landmarks", default=DEFAULT_LANDMARKS,
                     help=f"landmark model (default {DEFAULT_LANDMARKS}: MediaPipe's face points plus the "
                          f"dense network's ears, neck and back of head): {IRIS_LIDS_LANDMARKS} (the same with the "
                          f"iris model's lids alone, faster), {BOOTSTRAP_LANDMARKS} (MediaPipe alone), "
                          f"{DENSE_LANDMARKS} (the dense network alone, whole head), face_mesh_478, another "
                          "model shipped in onnx_models/models/, or FACE+HEAD for another combination")
    fit.add_argument("--device", default="cpu", choices=DEVICES,
                     help="cpu (default), gpu (CUDA: needs onnxruntime-gpu) or auto (the GPU when it works)")
    fit.add_argument("--no-previews", action="store_true", help="skip the overlay PNGs and video")
    fit.add_argument("--pupil-distance-mm", type=float, metavar="MM",
                     help="the actor's pupillary distance, if known: the head's true size from one camera "
                          "(default: the mean head's size)")
    fit.add_argument("--progress", default="bar", choices=("bar", "json"),
                     help="bar: a terminal progress line; json: JSON lines on stdout")
    fit.set_defaults(run=_fit)
    add_batch_command(commands)
    serve = commands.add_parser("serve", help="the Blender add-on's backend process (JSON lines on "
                                              "stdin/stdout, docs/protocol.md)")
    serve.set_defaults(run=_serve)
    head = commands.add_parser("head-model", help="inspect, build or look at head models",
                               description="info SPEC | build [--force] | obj|png|showcase --out FILE "
                                           "[--model X.npz] [--expression NAME=V] [--joint NAME=X,Y,Z] "
                                           "[--identity-seed N] [--points] ...")
    head.add_argument("action", choices=("info", "build", "obj", "png", "showcase"))
    head.add_argument("spec", nargs="?", default="open", help="info: open, a FLAME .pkl or a .npz")
    head.add_argument("--force", action="store_true", help="build: rebuild even when up to date")
    head.set_defaults(run=_head_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # Rendering options are the renderer's own: pass them through untouched.
    if len(argv) >= 2 and argv[0] == "head-model" and argv[1] in ("obj", "png", "showcase"):
        args = argparse.Namespace(run=_head_model, action=argv[1], render_args=argv[2:])
    else:
        args = parser.parse_args(argv)
    interrupt_on_signals()
    try:
        return args.run(args)
    except FacecapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; earlier results are unchanged", file=sys.stderr)
        return 130
    except OSError as exc:  # what no stage named: still one line, with the file
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 2
