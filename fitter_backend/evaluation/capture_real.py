"""Capture fidelity on real clips (issue 13's evaluation, real half): per frame, the landmarks'
lid and lip gaps beside the fitted head's, the keyed eyeBlink and jawOpen at the frames
people labelled, and a contact sheet of closed-eye and open-mouth frames with the fitted
mesh drawn over the image.

Clips live in ``../shared/fixtures/video`` (test data, never needed by the product). The
labelled frames are those of issue 13: eyes closed on wojtek 110 and 229-233 and GRID
bbaf2n 43-53, mouth open on wojtek 110 and 200, checked by eye on enlarged crops: bbaf2n
blinks twice in that span, closed at 43-44 and 51-53, half closed at 45 and 50 and open at
46-49, so those five frames are its closed ones here. GRID swwp2s comes with word timing
(``swwp2s.align``, 1000 units per frame).
"""
from __future__ import annotations

import csv
import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from fitter_backend.bench.metrics import jitter_mm
from fitter_backend.evaluation.capture_measures import (
    ARKIT_EYE,
    IBUG_NAMES,
    FittedShot,
    correlation,
    EYEBALL_INDEX,
    eye_corner_distance_mm,
    eyes_apart_deg,
    gaze_jitter_deg,
    load_fitted_shot,
    opening_ratios,
    outside_unit_range,
)
from fitter_backend.fitting.cameras import project
from fitter_backend.head_models.eyes import pupil_surface_points
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.lbs import posed_vertices, surface_points

FIXTURE_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "video"
#: Eyes count as open where the landmarks' opening is at least the clip's median and the
#: frame is this far from any labelled closed frame.
OPEN_EYE_MARGIN = 3
#: Mouths count as open where the landmarks' inner-lip gap is at least this fraction of the
#: inner mouth's width (or where people labelled it open).
OPEN_MOUTH_RATIO = 0.15
TILE_PX = 240
EYE_ZOOM = 2             # the strip under each tile shows the eyes this much larger
#: iBUG contours drawn on the contact sheet: eyes and inner lips.
CONTOURS = (tuple(range(36, 42)), tuple(range(42, 48)), tuple(range(60, 68)))


@dataclasses.dataclass(frozen=True)
class RealClip:
    name: str
    video: str                                  # relative to the fixture video folder
    frame_range: tuple[int, int] | None = None
    closed_eyes: tuple[int, ...] = ()
    open_mouth: tuple[int, ...] = ()
    align: str | None = None                    # GRID word timing, relative to the folder


CLIPS = (
    RealClip("wojtek", "metrical_tracker_wojtek.mp4", (95, 245), (110, 229, 230, 231, 232, 233), (110, 200)),
    RealClip("grid_bbaf2n", "grid_bbaf2n.mpg", None, (43, 44, 51, 52, 53)),
    RealClip("grid_swwp2s", "grid_more/id2_vcd_swwp2s.mpg", align="grid_more/swwp2s.align"),
)
MORE_CLIPS = (RealClip("grid_lwbsza", "grid_lwbsza.mpg"),) + tuple(
    RealClip(f"grid_{n}", f"grid_more/{n}.mpg") for n in
    ("brbk7n", "lbax4n", "lbbc2a", "lrwp9a", "pwij3p", "sbia1a", "sbwe5n", "swiz3n"))


def read_align(path: Path) -> list[tuple[int, int, str]]:
    """GRID word timing: (first frame, stop frame, word) per line of ``start stop word``."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 3:
            words.append((int(parts[0]) // 1000, int(parts[1]) // 1000, parts[2]))
    return words


def fitted_ibug_px(model: HeadModel, shot: FittedShot) -> tuple[np.ndarray, np.ndarray]:
    """(T, V, 3) fitted vertices and (T, 68, 2) their iBUG points in image pixels."""
    vertices = posed_vertices(model, shot.identity, shot.expression, shot.rotations, shot.translation_m)
    points = surface_points(vertices, model.triangles, model.semantic_points.subset(IBUG_NAMES))
    return vertices, project(points, shot.cameras, 0, derivatives=False).pixels


def clip_rows(model: HeadModel, clip: RealClip, shot: FittedShot) -> list[dict]:
    """One row per frame: landmark and fitted lid and inner-lip ratios, eyeBlink, jawOpen,
    mouthClose, word."""
    _, fitted_px = fitted_ibug_px(model, shot)
    landmark, fitted = opening_ratios(shot.landmark_ibug()), opening_ratios(fitted_px)
    words = read_align(FIXTURE_VIDEOS / clip.align) if clip.align else []
    rows = []
    for t, frame in enumerate(shot.frame_indices.tolist()):
        row = {"frame": frame}
        for key in ("eye_right", "eye_left", "mouth"):
            row[f"landmark_{key}"], row[f"fitted_{key}"] = float(landmark[key][t]), float(fitted[key][t])
        for side, arkit in ARKIT_EYE.items():
            row[f"eyeBlink{arkit}"] = float(shot.weight(f"eyeBlink{arkit}")[t])
        row["jawOpen"] = float(shot.weight("jawOpen")[t])
        row["mouthClose"] = float(shot.weight("mouthClose")[t])
        row["word"] = next((w for a, b, w in words if a <= frame < b), "")
        row["flags"] = shot.flags[t]
        rows.append(row)
    return rows


def clip_summary(model: HeadModel, clip: RealClip, shot: FittedShot, rows: list[dict]) -> dict:
    """Figures of one clip against issue 13's targets."""
    frames = np.array([r["frame"] for r in rows])
    col = {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0] if k not in ("word", "flags")}
    summary: dict = {"clip": clip.name, "mode": shot.report["mode"], "frames": len(rows)}
    closed = np.isin(frames, clip.closed_eyes)
    near_closed = np.zeros(len(frames), bool)
    for f in clip.closed_eyes:
        near_closed |= np.abs(frames - f) <= OPEN_EYE_MARGIN
    for side, arkit in ARKIT_EYE.items():
        blink, lm = col[f"eyeBlink{arkit}"], col[f"landmark_eye_{side}"]
        open_eye = ~near_closed & (lm >= np.nanmedian(lm))
        if open_eye.any():  # a short clip around a blink may have none
            summary[f"open_eyeBlink_max_{side}"] = float(np.max(blink[open_eye]))
            summary[f"open_eyeBlink_over_0.3_pct_{side}"] = float(100 * np.mean(blink[open_eye] > 0.3))
        if closed.any():
            summary[f"closed_eyeBlink_min_{side}"] = float(np.min(blink[closed]))
            summary[f"closed_eyeBlink_mean_{side}"] = float(np.mean(blink[closed]))
        summary[f"lid_corr_{side}"] = correlation(col[f"fitted_eye_{side}"], lm)
    open_mouth = (col["landmark_mouth"] >= OPEN_MOUTH_RATIO) | np.isin(frames, clip.open_mouth)
    summary["open_mouth_frames"] = int(open_mouth.sum())
    if open_mouth.any():
        summary["open_mouth_gap_err_pct"] = float(100 * np.median(
            np.abs(col["fitted_mouth"][open_mouth] / col["landmark_mouth"][open_mouth] - 1)))
    summary["mouth_corr"] = correlation(col["fitted_mouth"], col["landmark_mouth"])
    summary["jawOpen_corr"] = correlation(col["jawOpen"], col["landmark_mouth"])
    summary["lips_apart_corr"] = correlation(shot.lips_apart(), col["landmark_mouth"])
    summary["arkit_outside_pct"] = 100 * outside_unit_range(shot.expression)
    face = model.regions["face"] & model.skin
    vertices = posed_vertices(model, shot.identity, shot.expression, shot.rotations, shot.translation_m)
    summary["jitter_mm"] = jitter_mm(vertices[:, face])
    shaking = gaze_jitter_deg(model, shot.rotations)
    for side in ARKIT_EYE:
        summary[f"gaze_jitter_deg_{side}"] = float(shaking[EYEBALL_INDEX[side]])
    summary["eyes_apart_p90_deg"] = float(np.percentile(eyes_apart_deg(model, shot.rotations), 90))
    summary["eye_corners_mm"] = eye_corner_distance_mm(model, shot.identity)
    return summary


def _front_edges(model: HeadModel, camera_points: np.ndarray) -> np.ndarray:
    """(K, 2) vertex pairs of the face region's triangles that face the camera."""
    face = model.regions["face"] & model.skin
    tri = model.triangles[face[model.triangles].all(axis=1)]
    corners = camera_points[tri]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    tri = tri[np.einsum("tc,tc->t", normal, -corners.mean(1)) > 0]
    edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)


def contact_tile(image_rgb: np.ndarray, model: HeadModel, vertices: np.ndarray, shot: FittedShot, t: int,
                 fitted_px: np.ndarray, pupils: SurfacePoints, caption: str) -> np.ndarray:
    """A BGR crop around the face (TILE_PX square) showing the fitted mesh's face wireframe, its
    eye and inner-lip contours (green) and the landmarks' (red), its pupils (cyan rings) and the
    landmarks' iris centres (red dots), with the eyes EYE_ZOOM times larger in a strip below."""
    landmarks = shot.landmark_ibug()[t]
    centre = np.nanmean(landmarks, axis=0)
    side = 1.5 * float(np.nanmax(np.nanmax(landmarks, 0) - np.nanmin(landmarks, 0)))
    scale = TILE_PX / side
    offset = centre - side / 2
    affine = np.array([[scale, 0, -scale * offset[0]], [0, scale, -scale * offset[1]]])
    image = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)
    tile = cv2.warpAffine(image, affine, (TILE_PX, TILE_PX), flags=cv2.INTER_LINEAR)
    proj = project(vertices[None], shot.cameras, 0, derivatives=False)
    to_tile = lambda p: np.round((p - offset) * scale * 16).astype(np.int32)  # noqa: E731  4 fractional bits
    pixels = to_tile(proj.pixels[0] - 0.5)
    mesh = tile.copy()
    edges = _front_edges(model, proj.camera_points[0])
    cv2.polylines(mesh, [pixels[e] for e in edges], False, (235, 200, 120), 1, cv2.LINE_AA, shift=4)
    tile = cv2.addWeighted(mesh, 0.45, tile, 0.55, 0)
    for contour in CONTOURS:
        cv2.polylines(tile, [to_tile(fitted_px[t, list(contour)] - 0.5)], True, (60, 230, 60), 1, cv2.LINE_AA,
                      shift=4)
        for point in to_tile(landmarks[list(contour)] - 0.5):
            cv2.circle(tile, tuple(int(v) for v in point), 2 * 16, (40, 40, 240), -1, cv2.LINE_AA, shift=4)
    # Gaze: the fitted pupils (cyan rings) and the landmarks' iris centres (red dots).
    pupils_px = project(surface_points(vertices[None], model.triangles, pupils), shot.cameras, 0,
                        derivatives=False).pixels[0]
    for pupil in to_tile(pupils_px - 0.5):
        cv2.circle(tile, tuple(int(v) for v in pupil), 3 * 16, (230, 230, 40), 1, cv2.LINE_AA, shift=4)
    for name in ("iris_centre_L", "iris_centre_R"):
        if name in shot.semantic_points and np.all(np.isfinite(shot.mu_px[t, shot.semantic_points[name]])):
            centre = to_tile(shot.mu_px[t, shot.semantic_points[name]] - 0.5)
            cv2.circle(tile, tuple(int(v) for v in centre), 16, (40, 40, 240), -1, cv2.LINE_AA, shift=4)
    eyes = np.clip(((landmarks[36:48].mean(0) - offset) * scale).round().astype(int),
                   [TILE_PX // (2 * EYE_ZOOM), TILE_PX // (6 * EYE_ZOOM)],
                   [TILE_PX - TILE_PX // (2 * EYE_ZOOM), TILE_PX - TILE_PX // (6 * EYE_ZOOM)])
    half_w, half_h = TILE_PX // (2 * EYE_ZOOM), TILE_PX // (6 * EYE_ZOOM)
    strip = cv2.resize(tile[eyes[1] - half_h:eyes[1] + half_h, eyes[0] - half_w:eyes[0] + half_w],
                       (TILE_PX, 2 * half_h * EYE_ZOOM), interpolation=cv2.INTER_CUBIC)
    cv2.rectangle(tile, (0, 0), (TILE_PX, 30), (0, 0, 0), -1)
    for k, line in enumerate(caption.split("\n")):
        cv2.putText(tile, line, (4, 12 + 13 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([tile, strip])


def sheet_frames(clip: RealClip, rows: list[dict], count: int = 4) -> list[int]:
    """Closed-eye and open-mouth frames to show: the labelled ones (a few) and the widest mouths."""
    labelled = list(clip.closed_eyes[:: max(1, len(clip.closed_eyes) // 3)]) + list(clip.open_mouth)
    widest = [r["frame"] for r in sorted(rows, key=lambda r: -np.nan_to_num(r["landmark_mouth"]))]
    chosen = [f for f in dict.fromkeys(labelled + widest) if f in {r["frame"] for r in rows}]
    return sorted(chosen[: max(count, len(labelled))])


def clip_tiles(model: HeadModel, clip: RealClip, shot: FittedShot, rows: list[dict]) -> list[np.ndarray]:
    from fitter_backend.video import open_video

    vertices, fitted_px = fitted_ibug_px(model, shot)
    pupils = pupil_surface_points(model)
    by_frame = {r["frame"]: (t, r) for t, r in enumerate(rows)}
    tiles = []
    for frame in sheet_frames(clip, rows):
        t, row = by_frame[frame]
        (image,) = [f.image for f in open_video(FIXTURE_VIDEOS / clip.video, frame_range=(frame, frame + 1))]
        caption = (f"{clip.name} {frame} {row['word']}\nblink R {row['eyeBlinkRight']:.2f} L "
                   f"{row['eyeBlinkLeft']:.2f} jaw {row['jawOpen']:.2f}")
        tiles.append(contact_tile(image, model, vertices[t], shot, t, fitted_px, pupils, caption))
    return tiles


def write_contact_sheet(tiles: Sequence[np.ndarray], path: Path, columns: int = 5) -> Path:
    rows = [list(tiles[k:k + columns]) for k in range(0, len(tiles), columns)]
    blank = np.zeros_like(tiles[0])
    sheet = np.vstack([np.hstack(row + [blank] * (columns - len(row))) for row in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet)
    return path


def evaluate_real(clips: Sequence[RealClip], landmarks: str, out: Path,
                  progress: Callable[[str], None] | None = None, realtime: bool = False) -> list[dict]:
    """Fit each clip (offline, or frame by frame as ``fit --realtime`` does), write
    ``<out>/<clip>.csv`` (per frame) and ``<out>/contact_sheet.png``; returns one
    :func:`clip_summary` per clip (with its ``rows``)."""
    from fitter_backend.head_models.loading import load_head_model
    from fitter_backend.pipeline import FitJob, fit_videos

    model = load_head_model("open")
    out.mkdir(parents=True, exist_ok=True)
    summaries, tiles = [], []
    with tempfile.TemporaryDirectory(prefix="facecap-capture-real-") as folder:
        for clip in clips:
            if progress:
                progress(f"{clip.name}: {landmarks}")
            fit = fit_videos(FitJob(videos=(FIXTURE_VIDEOS / clip.video,), out=Path(folder) / clip.name,
                                    landmarks=landmarks, frame_range=clip.frame_range, realtime=realtime,
                                    previews=False))
            shot = load_fitted_shot(fit)
            rows = clip_rows(model, clip, shot)
            with open(out / f"{clip.name}.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            summaries.append({**clip_summary(model, clip, shot, rows), "rows": rows})
            tiles.extend(clip_tiles(model, clip, shot, rows))
    write_contact_sheet(tiles, out / "contact_sheet.png")
    return summaries


def format_report(summaries: list[dict], clips: Sequence[RealClip]) -> str:
    """Labelled frames row by row, then each clip's figures."""
    lines = ["labelled frames (ratios: gap / width, landmarks -> fit; eyeBlink target >= 0.6 when closed)",
             f"{'clip':<13}{'frame':>6}  {'eye R lm->fit':>14}  {'eye L lm->fit':>14}  {'mouth lm->fit':>14}"
             f"  {'blinkR':>7}{'blinkL':>7}{'jawOpen':>8}  what"]
    for summary, clip in zip(summaries, clips):
        for row in summary["rows"]:
            what = ", ".join(w for w, on in (("eyes closed", row["frame"] in clip.closed_eyes),
                                             ("mouth open", row["frame"] in clip.open_mouth)) if on)
            if what:
                lines.append(
                    f"{clip.name:<13}{row['frame']:>6}  "
                    + "  ".join(f"{row['landmark_' + k]:>6.2f}->{row['fitted_' + k]:<6.2f}"
                                for k in ("eye_right", "eye_left", "mouth"))
                    + f"  {row['eyeBlinkRight']:>7.2f}{row['eyeBlinkLeft']:>7.2f}{row['jawOpen']:>8.2f}  {what}")
    keys = [k for k in summaries[0] if k not in ("clip", "rows")]
    keys += [k for s in summaries for k in s if k not in keys and k not in ("clip", "rows")]
    lines.append("")
    lines.append(f"{'figure (R / L where per eye)':<34}" + "".join(f"{s['clip']:>16}" for s in summaries))
    for key in dict.fromkeys(k.removesuffix("_right").removesuffix("_left") for k in keys):
        cells = []
        for s in summaries:
            if f"{key}_right" in s or f"{key}_left" in s:
                cells.append(" / ".join(f"{s[key + side]:.2f}" if key + side in s else "-"
                                        for side in ("_right", "_left")))
            elif key in s:
                cells.append(f"{s[key]:.2f}" if isinstance(s[key], float) else str(s[key]))
            else:
                cells.append("-")
        lines.append(f"{key:<34}" + "".join(f"{c:>16}" for c in cells))
    words = [s for s in summaries if any(r["word"] for r in s["rows"])]
    for s in words:
        lines.append(f"\n{s['clip']}: inner-lip gap / width per word (landmarks -> fit, mean jawOpen)")
        seen: dict[str, list[dict]] = {}
        for row in s["rows"]:
            seen.setdefault(row["word"], []).append(row)
        for word, rows in seen.items():
            lines.append(f"  {word:<8}{np.mean([r['landmark_mouth'] for r in rows]):>6.2f} -> "
                         f"{np.mean([r['fitted_mouth'] for r in rows]):<6.2f} jawOpen "
                         f"{np.mean([r['jawOpen'] for r in rows]):.2f}")
    return "\n".join(lines)
