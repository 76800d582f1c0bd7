"""``python -m fitter_backend.evaluation nme``: NME per annotated fixture set (see the package).
``python -m fitter_backend.evaluation head``: whole-head error on rendered clips per landmark model.
``python -m fitter_backend.evaluation capture``: lids, lips, ARKit ranges, scale and shape on rendered
clips with known blinks and jaw motion, lid and lip gaps on real clips, and a contact sheet.
``python -m fitter_backend.evaluation semantic``: where annotators put the head model's iBUG points."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fitter_backend.errors import FacecapError
from fitter_backend.landmarks import BOOTSTRAP_LANDMARKS, DEFAULT_LANDMARKS, DENSE_LANDMARKS, WHOLE_HEAD_LANDMARKS

DEFAULT_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "landmarks"


def _nme(args: argparse.Namespace) -> int:
    from fitter_backend.evaluation.annotated import SETS, annotated_sets
    from fitter_backend.evaluation.landmark_nme import evaluate_sets, format_table, summarise
    from fitter_backend.head_models.loading import load_head_model
    from fitter_backend.landmarks import load_landmarker
    from fitter_backend.landmarks.embedding import landmark_embedding

    chosen = SETS
    if args.sets:
        chosen = tuple(s.strip() for s in args.sets.split(",") if s.strip())
        unknown = [s for s in chosen if s not in SETS]
        if unknown:
            raise FacecapError(f"--sets: unknown set(s) {', '.join(unknown)}; expected some of {', '.join(SETS)}")
    if args.limit is not None and args.limit < 1:
        raise FacecapError(f"--limit must be a whole number >= 1, got {args.limit}")
    faces = {name: found for name, found in annotated_sets(Path(args.fixtures)).items() if name in chosen}
    if not faces:
        raise FacecapError(f"no annotated faces of the sets {', '.join(chosen)} under {args.fixtures}")
    model = load_head_model(args.head)
    landmarker = load_landmarker(args.landmarks, progress=lambda message: None)
    points = landmark_embedding(model, landmarker)
    results = evaluate_sets(faces, model, points, landmarker, args.limit,
                            progress=lambda name: print(f"  {name}", file=sys.stderr, flush=True),
                            full_image=args.full_image)
    summary = summarise(results)
    print(f"NME in percent (head {model.name}, landmarks {args.landmarks}; 'fit': the fitted head's iBUG-68 "
          f"points, label translation; 'raw': {args.landmarks}'s own points at their iBUG counterparts; "
          f"68 and 51 points by the outer-eye-corner distance, 'box' by sqrt(w h) of the annotation; "
          f"faces: found / annotated, means over the found; "
          f"{'whole images, the face found by the landmark stage' if args.full_image else 'crops around the annotation'}; "
          f"imm: the 9 points IMM shares with iBUG-68)")
    print(format_table(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"head_model": model.name, "landmarks": args.landmarks,
                                               "full_image": args.full_image,
                                               "fixtures": str(args.fixtures), "sets": summary}, indent=1),
                                   encoding="utf-8")
        print(f"saved {args.json}")
    return 0


def _head(args: argparse.Namespace) -> int:
    from fitter_backend.evaluation.whole_head import evaluate_clips, format_table

    names = [name.strip() for name in args.landmarks.split(",") if name.strip()]
    if not names:
        raise FacecapError("--landmarks: expected comma-separated landmark model names")
    if args.clips < 1 or args.frames < 3:
        raise FacecapError(f"--clips must be >= 1 and --frames >= 3, got {args.clips} and {args.frames}")
    results = evaluate_clips(names, range(args.seed, args.seed + args.clips), args.frames, args.yaw,
                             progress=lambda message: print(f"  {message}", file=sys.stderr, flush=True))
    print(f"Neutral-head error in mm of the fitted identity (open head, {args.clips} rendered clip(s) of "
          f"{args.frames} frames turning up to {args.yaw:g} deg; whole-head rigid alignment, median per region, "
          f"mean over clips)")
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"saved {args.json}")
    return 0


def _capture(args: argparse.Namespace) -> int:
    from fitter_backend.evaluation import capture_real, capture_rendered

    names = [name.strip() for name in args.landmarks.split(",") if name.strip()]
    if not names:
        raise FacecapError("--landmarks: expected comma-separated landmark model names")
    if args.clips < 0 or args.frames < 20:
        raise FacecapError(f"--clips must be >= 0 and --frames >= 20, got {args.clips} and {args.frames}")
    log = lambda message: print(f"  {message}", file=sys.stderr, flush=True)  # noqa: E731
    mode = "real-time" if args.realtime else "offline"
    figures: dict = {}
    if args.clips:
        rendered = capture_rendered.evaluate_rendered(names, range(args.seed, args.seed + args.clips), args.frames,
                                                      args.yaw, progress=log, realtime=args.realtime)
        print(f"Rendered clips ({args.clips} x {args.frames} frames, open head, yaw up to {args.yaw:g} deg; "
              f"{mode} fit; means over clips; per eye: right / left)")
        print(capture_rendered.format_table(rendered))
        figures["rendered"] = rendered
    if args.real != "none":
        clips = capture_real.CLIPS + (capture_real.MORE_CLIPS if args.real == "all" else ())
        missing = [c.video for c in clips if not (capture_real.FIXTURE_VIDEOS / c.video).is_file()]
        if missing:
            raise FacecapError(f"real clips missing under {capture_real.FIXTURE_VIDEOS}: {', '.join(missing)} "
                               f"(test data; pass --real none to skip them)")
        out = Path(args.out)
        summaries = capture_real.evaluate_real(clips, names[0], out, progress=log, realtime=args.realtime)
        print(f"\nReal clips, landmarks {names[0]}, {mode} fit")
        print(capture_real.format_report(summaries, clips))
        print(f"per-frame tables: {out}/<clip>.csv; contact sheet: {out / 'contact_sheet.png'}")
        figures["real"] = [{k: v for k, v in s.items() if k != "rows"} for s in summaries]
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=float), encoding="utf-8")
        print(f"saved {args.json}")
    return 0


def _semantic(args: argparse.Namespace) -> int:
    from fitter_backend.evaluation.annotated import annotated_sets
    from fitter_backend.evaluation.semantic_offsets import face_offsets, format_offsets
    from fitter_backend.head_models.loading import load_head_model
    from fitter_backend.landmarks import load_landmarker
    from fitter_backend.landmarks.embedding import landmark_embedding

    chosen = tuple(s.strip() for s in args.sets.split(",") if s.strip())
    faces = [face for name, found in annotated_sets(Path(args.fixtures)).items() if name in chosen for face in found]
    if not faces:
        raise FacecapError(f"no annotated faces of the sets {', '.join(chosen) or '(none)'} under {args.fixtures}")
    model = load_head_model(args.head)
    landmarker = load_landmarker(args.landmarks, progress=lambda message: None)
    offsets = face_offsets(model, landmark_embedding(model, landmarker), landmarker, faces,
                           progress=lambda name: print(f"  {name}", file=sys.stderr, flush=True))
    print(f"Annotated iBUG points minus head model {model.name}'s semantic points on the neutral head, in "
          f"outer-eye-corner distances (x: subject's left, y: up; mean ± standard error over {len(faces)} faces of "
          f"{', '.join(chosen)}; landmarks {args.landmarks})")
    print(format_offsets(offsets))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fitter_backend.evaluation", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    nme = commands.add_parser("nme", help="NME of the fitted head's iBUG-68 points per annotated set")
    nme.add_argument("--fixtures", default=str(DEFAULT_FIXTURES),
                     help="the annotated sets' folder (default: ../shared/fixtures/landmarks)")
    nme.add_argument("--sets", help="comma-separated subset of 300w, wflw, 300vw, aflw2000, imm (default: all found)")
    nme.add_argument("--limit", type=int, help="at most this many faces per set")
    nme.add_argument("--head", default="open", help="open (default), a FLAME .pkl or a head-model .npz")
    nme.add_argument("--landmarks", default=DEFAULT_LANDMARKS,
                     help=f"landmark model (default {DEFAULT_LANDMARKS}; {DENSE_LANDMARKS}, {WHOLE_HEAD_LANDMARKS} "
                          "(MediaPipe's face points plus the dense network's ears, neck and back of head), "
                          "face_mesh_478)")
    nme.add_argument("--full-image", action="store_true",
                     help="give the landmark stage the whole image, as `fit` does, instead of a crop around the "
                          "annotated face (a face it does not find counts as not found)")
    nme.add_argument("--json", help="also save the figures (per set and per face) to this JSON file")
    nme.set_defaults(run=_nme)
    head = commands.add_parser("head", help="whole-head error of the fitted identity on rendered clips")
    head.add_argument("--landmarks", default=f"{BOOTSTRAP_LANDMARKS},{DENSE_LANDMARKS},{WHOLE_HEAD_LANDMARKS}",
                      help="comma-separated landmark models to compare (default: MediaPipe, dense, both)")
    head.add_argument("--clips", type=int, default=3, help="rendered clips, one random actor each (default 3)")
    head.add_argument("--frames", type=int, default=75, help="frames per clip (default 75)")
    head.add_argument("--yaw", type=float, default=60.0, help="largest head turn in degrees (default 60)")
    head.add_argument("--seed", type=int, default=1, help="first clip's seed (default 1)")
    head.add_argument("--json", help="also save the figures per clip to this JSON file")
    head.set_defaults(run=_head)
    capture = commands.add_parser("capture", help="lids, lips, ARKit ranges, scale and shape: rendered clips "
                                                  "with known truth and real clips (issue 13)")
    capture.add_argument("--landmarks", default=DEFAULT_LANDMARKS,
                         help=f"comma-separated landmark models for the rendered clips (default {DEFAULT_LANDMARKS}); "
                              "the real clips use the first")
    capture.add_argument("--clips", type=int, default=2,
                         help="rendered clips, one random actor each (default 2; 0: none)")
    capture.add_argument("--frames", type=int, default=100, help="frames per rendered clip (default 100)")
    capture.add_argument("--yaw", type=float, default=20.0, help="largest head turn in degrees (default 20)")
    capture.add_argument("--seed", type=int, default=1, help="first rendered clip's seed (default 1)")
    capture.add_argument("--real", choices=("default", "all", "none"), default="default",
                         help="real clips: wojtek, GRID bbaf2n and swwp2s (default), all GRID clips too, or none")
    capture.add_argument("--realtime", action="store_true",
                         help="fit frame by frame as fit --realtime does (default: offline, the whole shot at once)")
    capture.add_argument("--out", default="out/capture", help="folder for per-frame CSVs and the contact sheet")
    capture.add_argument("--json", help="also save the figures to this JSON file")
    capture.set_defaults(run=_capture)
    semantic = commands.add_parser("semantic", help="where annotators put the head model's iBUG points")
    semantic.add_argument("--fixtures", default=str(DEFAULT_FIXTURES),
                          help="the annotated sets' folder (default: ../shared/fixtures/landmarks)")
    semantic.add_argument("--sets", default="300w,300vw,wflw",
                          help="comma-separated sets (default: the near-frontal 300w,300vw,wflw; also aflw2000)")
    semantic.add_argument("--head", default="open", help="open (default), a FLAME .pkl or a head-model .npz")
    semantic.add_argument("--landmarks", default=DEFAULT_LANDMARKS, help=f"landmark model (default {DEFAULT_LANDMARKS})")
    semantic.set_defaults(run=_semantic)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FacecapError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
