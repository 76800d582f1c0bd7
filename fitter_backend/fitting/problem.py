"""What the fitter is given (landmark observations, cameras, settings) and what it solves for.

Observations follow the landmark stage's contract: per frame, camera and landmark a mean
``mu_px`` (x right, y down, pixels) and an uncertainty ``sigma_px``. A landmark whose mu is
not finite is missing (e.g. the frame had no face); present landmarks need a finite sigma > 0.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fitter_backend.errors import FitError
from fitter_backend.fitting.cameras import Cameras
from fitter_backend.fitting.causal_filter import OneEuroGains, PoseSmoothing
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints


#: Pupil distances a fit accepts, mm: well outside adults' 54-74 on both sides.
PUPIL_DISTANCE_MM = (40.0, 90.0)


def is_pupil_distance_mm(value: object) -> bool:
    """Whether ``value`` is a number in :data:`PUPIL_DISTANCE_MM` (not a bool, not NaN)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and PUPIL_DISTANCE_MM[0] <= value <= PUPIL_DISTANCE_MM[1])


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Weights of the energy terms and solver controls.

    identity_weight scales -log p(identity); expression_weight the |psi|^2 prior;
    opposing_weight the products of opposing bounded units (both on would cancel);
    joint_weight (per radian) the non-root joint rotations; temporal_weight (per pixel) the
    change of projected landmarks between neighbouring frames (on ``temporal_points`` of
    them, enough to see every part of the head move), and with it eye_temporal_weight (per
    radian) the change of the eye joints' rotations, depth_temporal_weight (per metre) the
    change of the head's distance along camera 0's axis and expression_temporal_weight (per unit)
    the change of the steady ARKit weights; size_weight (per percent) the neutral head's size
    change from the prior's mean where no camera pair sees the scale (or, given
    pupil_distance_mm, the eyeball centres' distance from it, on any cameras);
    eye_coupling_weight (per radian) the difference between the two eyes' rotations (conjugate
    gaze); intersect_weight_per_m the depth of eyelids inside eyeballs and lips inside the teeth
    hull; look_coupling_weight the
    difference between the two eyes' eyeLook units (their lids follow one gaze).
    realtime_temporal_weight replaces temporal_weight in real-time mode, and realtime_smoothing
    (None: off) filters its output (:mod:`fitter_backend.fitting.causal_filter`).
    """

    identity_weight: float = 1.0
    expression_weight: float = 1.0
    opposing_weight: float = 16.0  # product w a b of opposing expression units (eyeBlink, eyeWide)
    # Multipliers of expression_weight for single units, by name (a name without Left/Right
    # applies to both sides). The brow units also move the upper lids, and with one prior for
    # all the fit spread real blinks over them; a blink now costs a quarter of a brow move
    # (README, "The fitter": GRID bbaf2n closed eyeBlink 0.57 -> 0.68). The lower and upper
    # lips' own openers cost twice the prior, so an open mouth is jawOpen's, not a lip pulled
    # down over a shut jaw (rendered jawOpen corr. with the lip gap 0.76 -> 0.79, wojtek 0.83 -> 0.87).
    expression_unit_weights: tuple[tuple[str, float], ...] = (
        ("eyeBlink", 0.25), ("browInnerUp", 4.0), ("browOuterUp", 4.0), ("browDown", 4.0),
        ("mouthLowerDown", 2.0), ("mouthUpperUp", 2.0))
    joint_weight: float = 2.0
    # 0.3 before the eyeLook units were coupled across the eyes (look_coupling_weight), which
    # left each eye's lid noise to the head pose: 0.33 brings the jitter back (lower on 10 of 12 real
    # clips, at most 2 % higher on the others; docs/landmark_models.md, section 3b, stop 26).
    temporal_weight: float = 0.33
    temporal_points: int = 128  # landmarks (spread over the head) that E_temporal watches
    # Real time, E_temporal can only pull toward the frame before, so at 0.33 every motion
    # lagged (gaze 17 deg off, jawOpen corr. 0.42 on renders). Lighter, the solve follows, and
    # the noise it lets through is filtered after it, fast channels (lids, jaw, eyes) opening
    # with their speed and depth held longest (docs/landmark_models.md, section 3b, stop 29).
    realtime_temporal_weight: float = 0.13
    realtime_smoothing: PoseSmoothing | None = PoseSmoothing(
        expression=OneEuroGains(1.0, 10.0, 5.0), head_rotation=OneEuroGains(3.0, 3.0, 2.0, lead=1.0),
        direction=OneEuroGains(3.0, 3.0, 2.0, lead=1.0), depth=OneEuroGains(0.5, 1.0, 1.0),
        face_rotation=OneEuroGains(1.0, 10.0, 2.0))
    # Where an iris is hidden (a blink, a half-shut lid) nothing but these keeps that eye's gaze:
    # the joint prior alone snapped it to straight ahead, away from the other eye (wojtek, the
    # left eye at 0 deg in 15 % of frames, the eyes up to 19 deg apart). An iris centre's sigma
    # is about 6 deg of eye turn, so the gaze also shook (median |2nd difference| 0.7 deg).
    eye_temporal_weight: float = 10.0
    # E_temporal in pixels barely sees the head's distance (1 mm nearer at 0.5 m grows a 100 px
    # face by 0.2 px), so it was free to shake and carried most of the head's jitter (its
    # second difference 0.15-0.33 of 0.21-0.34 mm/frame^2 on the capture clips): rendered jitter
    # added 0.521 -> 0.473, real 0.48 / 0.38 / 0.47 -> 0.45 / 0.30 / 0.31 with every other figure
    # the same (docs/landmark_models.md, section 3b, stop 29).
    depth_temporal_weight: float = 1000.0
    # The steady ARKit units (HeadModel.steady_expressions: all but the lids', the eyes' and the
    # jaw's opening and closing) shook with the landmarks' noise; rows w (psi_i - psi_{i-1}) on
    # them steady the face without touching blinks or the jaw (rendered jitter added 0.473 ->
    # 0.417, held out 0.51 -> 0.43, blinks unchanged; docs/landmark_models.md, section 3b, stop 30).
    expression_temporal_weight: float = 3.0
    # One camera cannot see size (stop 21: exact landmarks give about the prior's mean head
    # whatever the actor's), and MediaPipe's points, which imply more relief than the head has,
    # bought perspective with a smaller, nearer head. A row w per percent of the neutral head's
    # size change from the prior's mean (head_models/head_size.py), where no camera pair sees the
    # scale: rendered held-out head size -4.1 -> -0.8 % (seeds 1-2, actors 5-12 % above the mean,
    # -12.1 -> -9.3 %), focal -4.7 -> -5.9 %; weight 5 cost the FLAME-format benchmark's identity
    # (docs/landmark_models.md, "Sigma and scale", stop 31).
    size_weight: float = 1.0
    # The actor's pupillary distance in mm, when the artist knows it (eyes looking far ahead):
    # the scale one camera lacks. E_size then holds the eyeball centres this far apart instead,
    # on any cameras (rendered actors 5-12 % above the mean head: size -6.1 / -12.5 % -> -4.6 /
    # -5.5 %; docs/landmark_models.md, "Sigma and scale", stop 31).
    pupil_distance_mm: float | None = None
    eye_coupling_weight: float = 15.0
    intersect_weight_per_m: float = 3000.0
    look_coupling_weight: float = 16.0
    # Coarse to fine: rigid, + expression/joints, + identity and focal. The expression stage is
    # off by default: with the mean identity, expressions absorb identity and the joint stage
    # then crawls out of it (FLAME-format benchmark: 1.10 vs 0.58 mm identity error).
    stage_iterations: tuple[int, int, int] = (3, 0, 40)
    identity_keyframes: int = 40   # longer shots solve identity and cameras on this many frames first,
    frame_iterations: int = 8      # then every frame (with E_temporal) with them fixed
    relative_tolerance: float = 1e-4  # stop a stage when a step lowers the energy by less than this
    chunk_frames: int = 24
    high_residual_rms: float = 3.0  # frames whose normalised RMS exceeds this are flagged

    def __post_init__(self) -> None:
        for field in ("identity_weight", "expression_weight", "opposing_weight", "joint_weight", "temporal_weight",
                      "realtime_temporal_weight", "eye_temporal_weight", "depth_temporal_weight",
                      "expression_temporal_weight", "size_weight", "eye_coupling_weight", "intersect_weight_per_m",
                      "look_coupling_weight"):
            value = getattr(self, field)
            if not (np.isfinite(value) and value >= 0):
                raise FitError(f"setting {field} must be a finite number >= 0, got {value!r}")
        if self.pupil_distance_mm is not None and not is_pupil_distance_mm(self.pupil_distance_mm):
            raise FitError(f"the actor's pupil distance must be {PUPIL_DISTANCE_MM[0]:g} to {PUPIL_DISTANCE_MM[1]:g} mm "
                           f"(adults: about 54-74), got {self.pupil_distance_mm!r}")
        for name, value in self.expression_unit_weights:
            if not (np.isfinite(value) and value >= 0):
                raise FitError(f"expression_unit_weights[{name!r}] must be a finite number >= 0, got {value!r}")
        if any(int(n) < 0 for n in self.stage_iterations) or len(self.stage_iterations) != 3:
            raise FitError(f"stage_iterations must be three counts >= 0, got {self.stage_iterations!r}")


@dataclasses.dataclass(frozen=True)
class Observations:
    """mu_px (N, C, S, 2) and sigma_px (N, C, S) for N frames, C cameras, S landmarks."""

    mu_px: np.ndarray
    sigma_px: np.ndarray

    @property
    def num_frames(self) -> int:
        return self.mu_px.shape[0]

    @property
    def present(self) -> np.ndarray:
        """(N, C, S) bool: landmarks that were observed."""
        return np.all(np.isfinite(self.mu_px), axis=-1)

    @classmethod
    def monocular(cls, mu_px: np.ndarray, sigma_px: np.ndarray) -> "Observations":
        """From (N, S, 2) means and (N, S) sigmas of one camera."""
        mu = np.asarray(mu_px, dtype=np.float64)
        sigma = np.asarray(sigma_px, dtype=np.float64)
        if mu.ndim != 3 or sigma.ndim != 2:
            raise FitError(f"monocular landmarks need mu (frames, landmarks, 2) and sigma (frames, landmarks); "
                           f"got {mu.shape} and {sigma.shape}")
        return cls(mu[:, None], sigma[:, None])

    @classmethod
    def from_landmarks(cls, mu_px: np.ndarray, sigma_px: np.ndarray, valid: np.ndarray) -> "Observations":
        """From the landmark stage's track: mu_px (N, C, S, 2), sigma_px (N, C, S) and valid (N, C);
        views flagged no_face or low_confidence (valid False) become missing."""
        mu = np.array(mu_px, dtype=np.float64)
        mu[~np.asarray(valid, dtype=bool)] = np.nan
        return cls(mu, np.asarray(sigma_px, dtype=np.float64))


def validate_observations(obs: Observations, landmarks: SurfacePoints, model: HeadModel,
                          cameras: Cameras) -> None:
    """Raise FitError with a precise message for inputs the fitter cannot use."""
    mu, sigma = obs.mu_px, obs.sigma_px
    if mu.ndim != 4 or mu.shape[-1] != 2:
        raise FitError(f"mu_px must have shape (frames, cameras, landmarks, 2), got {mu.shape}")
    if sigma.shape != mu.shape[:3]:
        raise FitError(f"sigma_px must have shape {mu.shape[:3]} to match mu_px, got {sigma.shape}")
    if mu.shape[0] == 0:
        raise FitError("no frames to fit: the landmark arrays have zero frames")
    if mu.shape[1] != cameras.count:
        raise FitError(f"landmarks are given for {mu.shape[1]} cameras but {cameras.count} cameras are defined")
    if mu.shape[2] != len(landmarks):
        raise FitError(f"landmarks have {mu.shape[2]} points but the landmark set embedded on the head has "
                       f"{len(landmarks)}")
    if len(landmarks) and (landmarks.triangle.min() < 0 or landmarks.triangle.max() >= len(model.triangles)):
        raise FitError(f"the landmark set does not match head model {model.name!r}: its triangle indices go up "
                       f"to {int(landmarks.triangle.max())} but the model has {len(model.triangles)} triangles")
    present = obs.present
    bad_sigma = present & ~(np.isfinite(sigma) & (sigma > 0))
    if bad_sigma.any():
        frame, camera, point = (int(i[0]) for i in np.nonzero(bad_sigma))
        raise FitError(f"sigma_px must be a finite number > 0 for every observed landmark; frame {frame}, "
                       f"camera {camera}, landmark {point} has {sigma[frame, camera, point]!r} "
                       f"({int(bad_sigma.sum())} such values)")
    for c in range(cameras.count):
        if not cameras.extrinsics_known[c] and not present[:, c].any():
            raise FitError(f"camera {c} ({cameras.names[c]}) has no landmarks in any frame, so its position "
                           "cannot be estimated; give its extrinsics in the calibration")
    if not present.any():
        raise FitError("no landmarks were observed in any frame (no face found?)")


@dataclasses.dataclass
class Parameters:
    """Unknowns of a shot: identity (I,), expression (N, E), rotations (N, J, 3) axis-angle
    (joint 0 = head in world space), translation_m (N, 3), and the cameras."""

    identity: np.ndarray
    expression: np.ndarray
    rotations: np.ndarray
    translation_m: np.ndarray
    cameras: Cameras

    @property
    def num_frames(self) -> int:
        return self.expression.shape[0]

    def copy(self) -> "Parameters":
        return Parameters(self.identity.copy(), self.expression.copy(), self.rotations.copy(),
                          self.translation_m.copy(), self.cameras.copy())


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each unknown sits in the per-frame vector y (p) and the shared vector z (q)."""

    num_expression: int
    num_joints: int
    num_identity: int
    focal_cameras: np.ndarray       # cameras whose focal is optimised
    extrinsic_cameras: np.ndarray   # cameras whose pose is optimised
    # Expression channels that are blend-shape weights kept in [0, 1] (ARKit units).
    bounded_expression: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))
    # Per-frame columns held at their start (joints whose motion an expression unit owns).
    held_frame_columns: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, int))

    @property
    def frame_size(self) -> int:
        return self.num_expression + 3 * self.num_joints + 3

    @property
    def expression_slice(self) -> slice:
        return slice(0, self.num_expression)

    @property
    def rotation_slice(self) -> slice:
        return slice(self.num_expression, self.num_expression + 3 * self.num_joints)

    @property
    def translation_slice(self) -> slice:
        return slice(self.frame_size - 3, self.frame_size)

    @property
    def shared_size(self) -> int:
        return self.num_identity + len(self.focal_cameras) + 6 * len(self.extrinsic_cameras)

    def focal_column(self, camera: int) -> int | None:
        hits = np.flatnonzero(self.focal_cameras == camera)
        return int(self.num_identity + hits[0]) if len(hits) else None

    def extrinsic_columns(self, camera: int) -> slice | None:
        hits = np.flatnonzero(self.extrinsic_cameras == camera)
        if not len(hits):
            return None
        start = self.num_identity + len(self.focal_cameras) + 6 * int(hits[0])
        return slice(start, start + 6)

    @classmethod
    def for_problem(cls, model: HeadModel, cameras: Cameras) -> "Layout":
        # One source of mouth opening: a head with ARKit jaw units (jawOpen, jawLeft, jawRight,
        # jawForward move the chin, lower teeth and tongue) opens its mouth with them alone; its
        # jaw bone stays at rest so the two cannot fight. Heads without them (FLAME) use the bone.
        held = np.zeros(0, int)
        if "jawOpen" in model.expression_names and "jaw" in model.joint_names:
            start = model.num_expression + 3 * model.joint_index("jaw")
            held = np.arange(start, start + 3)
        return cls(model.num_expression, model.num_joints, model.num_identity,
                   np.flatnonzero(~cameras.focal_known), np.flatnonzero(~cameras.extrinsics_known),
                   np.flatnonzero(model.expression_bounded), held)

    def fixed_columns(self, params: Parameters, frame_gradient: np.ndarray) -> np.ndarray:
        """(N, p) bool: per-frame columns a step must not move: the held columns, and bounded
        expression weights on a bound that the descent direction -gradient would push them
        through (the active set of a projected step)."""
        fixed = np.zeros(frame_gradient.shape, bool)
        fixed[:, self.held_frame_columns] = True
        b = self.bounded_expression
        weights, gradient = params.expression[:, b], frame_gradient[:, self.expression_slice][:, b]
        fixed[:, self.expression_slice.start + b] = (((weights <= 0.0) & (gradient > 0))
                                                     | ((weights >= 1.0) & (gradient < 0)))
        return fixed

    def crossings(self, params: Parameters, delta_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, p) bool: bounded expression columns that a step (N, p) takes out of [0, 1], and
        (N, p) the steps that take them exactly to the bound instead."""
        crossing, to_bound = np.zeros(delta_frames.shape, bool), np.zeros(delta_frames.shape)
        columns = self.expression_slice.start + self.bounded_expression
        weights = params.expression[:, self.bounded_expression]
        moved = weights + delta_frames[:, columns]
        crossing[:, columns] = (moved < 0.0) | (moved > 1.0)
        to_bound[:, columns] = np.clip(moved, 0.0, 1.0) - weights
        return crossing, to_bound

    def projected(self, params: Parameters) -> Parameters:
        """The parameters with bounded expression weights clipped to [0, 1] (a copy)."""
        out = params.copy()
        b = self.bounded_expression
        out.expression[:, b] = np.clip(out.expression[:, b], 0.0, 1.0)
        return out

    def apply(self, params: Parameters, delta_frames: np.ndarray, delta_shared: np.ndarray) -> Parameters:
        """Parameters moved by a step (N, p) on the frames and (q,) on the shared unknowns,
        projected onto the bounds of the bounded expression weights."""
        out = self.projected(params)
        n = params.num_frames
        out.expression += delta_frames[:, self.expression_slice]
        b = self.bounded_expression
        out.expression[:, b] = np.clip(out.expression[:, b], 0.0, 1.0)
        out.rotations += delta_frames[:, self.rotation_slice].reshape(n, self.num_joints, 3)
        out.translation_m += delta_frames[:, self.translation_slice]
        out.identity += delta_shared[: self.num_identity]
        for c in self.focal_cameras:
            out.cameras.focal_px[c] *= np.exp(delta_shared[self.focal_column(c)])
        for c in self.extrinsic_cameras:
            cols = self.extrinsic_columns(c)
            out.cameras.rotation[c] += delta_shared[cols][:3]
            out.cameras.translation_m[c] += delta_shared[cols][3:]
        return out
