"""The energy of a shot and its residual terms (paper eq. 3 and supplement):

    E = E_landmarks + E_identity + E_expression + E_joints + E_temporal + E_intersect

E_joints includes conjugate gaze (the two eyes' rotations kept alike) and E_temporal the eye
joints' change between frames (the iris points see the gaze only while the lids are open);
E_identity includes E_size, the head's size held at the prior's mean where no camera pair sees
scale (or its pupils at the actor's measured distance).
Each term writes residual rows and their analytic Jacobians into :class:`NormalEquations`;
the solver never sees the terms. Frames are processed in chunks so memory stays bounded.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from fitter_backend.fitting import closed_eyes, point_rig, rig_kernels
from fitter_backend.fitting.cameras import Cameras, Projection
from fitter_backend.fitting.intersection import IntersectionGeometry, intersection_geometry
from fitter_backend.fitting.normal_equations import NormalEquations
from fitter_backend.fitting.problem import FitSettings, Layout, Observations, Parameters
from fitter_backend.fitting.sampling import farthest_points
from fitter_backend.head_models.head_model import HeadModel, SurfacePoints
from fitter_backend.head_models.head_size import SizeLine, eye_distance_line, size_line
from fitter_backend.head_models.lbs import skew, surface_points

TERMS = ("landmarks", "identity", "expression", "joints", "temporal", "intersect")


@dataclasses.dataclass
class Evaluation:
    """energy (float), energy per term, per-frame RMS of normalised landmark residuals (N,)
    (NaN where a frame has no landmarks), and the normal equations when asked for."""

    energy: float
    terms: dict[str, float]
    frame_rms: np.ndarray
    equations: NormalEquations | None


#: E_size's weight (per percent) on a measured pupil distance: a measurement, not a prior, so
#: ten times the prior's pull to the mean size.
PUPIL_DISTANCE_WEIGHT = 10.0


@dataclasses.dataclass(frozen=True)
class SizeRow:
    """What E_size holds: ``line``'s linearised length at ``target_m``, ``weight`` per percent of
    it; ``measured`` (a pupil distance the artist gave) holds on any cameras, the prior's mean
    size only where the cameras do not see scale."""

    line: SizeLine
    target_m: float
    weight: float
    measured: bool

    @property
    def gain(self) -> np.ndarray:
        """(I,) d residual / d identity."""
        return self.weight * 100.0 / self.target_m * self.line.gradient_m

    def residual(self, identity: np.ndarray) -> float:
        return float(self.gain @ (identity - self.line.reference)
                     + self.weight * 100.0 * (self.line.size_m - self.target_m) / self.target_m)


def size_row(model: HeadModel, settings: FitSettings) -> SizeRow | None:
    """The actor's pupil distance when given, else the head's size at the prior's mean (None
    with size_weight 0)."""
    if settings.pupil_distance_mm is not None:
        return SizeRow(eye_distance_line(model), settings.pupil_distance_mm / 1000.0, PUPIL_DISTANCE_WEIGHT, True)
    if settings.size_weight > 0:
        line = size_line(model)
        return SizeRow(line, line.size_m, settings.size_weight, False)
    return None


@dataclasses.dataclass
class _Chunk:
    """World points of a chunk of frames and their derivatives with respect to y and identity."""

    frames: np.ndarray
    points: np.ndarray            # (n, P, 3)
    d_frame: np.ndarray | None    # (n, 3, P, p)  coordinate-major, like the point rig
    d_identity: np.ndarray | None  # (n, 3, P, I)
    state: point_rig.PointState
    jac: point_rig.PointJacobians | None


def expression_unit_scales(expression_names: tuple[str, ...] | list[str],
                           unit_weights: tuple[tuple[str, float], ...]) -> np.ndarray:
    """(E,) multipliers of the expression prior: 1, or the weight given for a unit's name
    (a name without Left/Right applies to both sides)."""
    by_name = dict(unit_weights)
    return np.array([by_name.get(name, by_name.get(name.removesuffix("Left").removesuffix("Right"), 1.0))
                     for name in expression_names], np.float64)


def project(points: np.ndarray, cameras: Cameras, camera: int, derivatives: bool = True) -> Projection:
    """:func:`fitter_backend.fitting.cameras.project` by a compiled kernel: the same figures,
    without the dozens of numpy calls that dominate it for one frame's few hundred points."""
    rotation, left = rig_kernels.rotations_and_left_jacobians(cameras.rotation[camera: camera + 1])
    cx, cy = cameras.principal_point_px[camera]
    pixels, camera_points, d_world, d_log_focal, d_extrinsics = rig_kernels.project_points(
        np.asarray(points, dtype=np.float64), rotation[0], cameras.translation_m[camera],
        float(cameras.focal_px[camera]), float(cx), float(cy), left[0], derivatives)
    if not derivatives:
        return Projection(pixels, camera_points)
    return Projection(pixels, camera_points, d_world, d_log_focal, d_extrinsics)


class _Tally:
    """Energy per term, and (when ``keep``) every residual row for solvers that want the vector."""

    def __init__(self, keep: bool = False):
        self.terms = dict.fromkeys(TERMS, 0.0)
        self.rows: list[np.ndarray] | None = [] if keep else None

    def add(self, term: str, residual: np.ndarray) -> None:
        self.terms[term] += 0.5 * float(np.sum(residual * residual))
        if self.rows is not None:
            self.rows.append(residual.ravel())


def _parameter_changes(values: np.ndarray, columns: np.ndarray, weight: float, anchor: np.ndarray | None,
                       layout: Layout, equations: NormalEquations | None, terms: _Tally) -> None:
    """E_temporal on per-frame unknowns themselves: rows weight (v_i - v_{i-1}) for ``values``
    (N, k), the frames' unknowns in ``columns`` (k,), and for the first frame weight (v_0 -
    anchor) where an ``anchor`` (k,) is given (real time: the frame before)."""
    n, k = values.shape
    if anchor is not None:
        residual = weight * (values[:1] - np.asarray(anchor).reshape(1, k))
        terms.add("temporal", residual)
        if equations is not None:
            d_values = np.zeros((1, k, layout.frame_size))
            d_values[0, np.arange(k), columns] = weight
            equations.add_frame_rows(np.array([0]), residual, d_values, None)
    if n < 2:
        return
    residual = weight * (values[1:] - values[:-1])
    terms.add("temporal", residual)
    if equations is not None:
        equations.add_frame_changes(columns, residual, weight)


class ShotEnergy:
    """The energy of one shot: a head model, a landmark set embedded on it, observations."""

    def __init__(self, model: HeadModel, landmarks: SurfacePoints, observations: Observations,
                 settings: FitSettings):
        self.model = model
        self.settings = settings
        self.geometry: IntersectionGeometry | None = (
            intersection_geometry(model) if settings.intersect_weight_per_m > 0 else None)
        geometry = self.geometry
        vertex_ids = (np.concatenate([geometry.eyelid_vertices, geometry.lip_vertices, geometry.anchor_vertices])
                      if geometry else np.zeros(0, int))
        joint_ids = geometry.eye_joints if geometry else np.zeros(0, int)
        # Landmarks that hold still while the lid skin slides under them also get their closed-eye
        # places as rig points, right after the landmarks (fitting/closed_eyes.py).
        self.sliding = closed_eyes.sliding_landmarks(model, landmarks)
        rig_points = landmarks if self.sliding is None else landmarks.join(self.sliding.closed)
        self.rig = point_rig.build_point_rig(model, rig_points, vertex_ids, joint_ids)
        s = len(landmarks)
        self.landmark_points = slice(0, s)
        if self.sliding is not None:
            self.closed_points = s + np.arange(len(self.sliding.landmark))
            s += len(self.sliding.landmark)
        if geometry:
            ne, nl, na = len(geometry.eyelid_vertices), len(geometry.lip_vertices), len(geometry.hulls)
            self.eyelid_points = slice(s, s + ne)
            self.lip_points = slice(s + ne, s + ne + nl)
            self.anchor_points = s + ne + nl + np.arange(na)
            self.eye_points = s + ne + nl + na + np.arange(2)
        rest_points = surface_points(model.template[None], model.triangles, landmarks)[0]
        self.temporal_subset = farthest_points(rest_points, settings.temporal_points)
        self.size_row = size_row(model, settings)
        self.opposing_pairs = model.opposing_expressions if settings.opposing_weight > 0 else np.zeros((0, 2), int)
        self.conjugate_pairs = model.conjugate_expressions
        self.steady_units = model.steady_expressions
        self.expression_scales = expression_unit_scales(model.expression_names, settings.expression_unit_weights)
        offset, gain = model.blend_scale_terms
        self.scaled_units = np.flatnonzero((offset != 1.0) | np.any(gain != 0.0, axis=1))
        # identity bytes -> its scaled rig, the last one only; shared with restricted() copies
        # (real time restricts the energy to each frame in turn at one identity).
        self._scaled_rig: dict[bytes, point_rig.PointRig] = {}
        present = observations.present
        self.present = present
        self.mu = np.where(present[..., None], observations.mu_px, 0.0)
        self.inv_sigma = np.where(present, 1.0 / np.where(present, observations.sigma_px, 1.0), 0.0)
        self.num_frames = observations.num_frames
        # Projected landmarks (C, 2, S') and eye rotations (2, 3) of the frame before frame 0,
        # held fixed (real time).
        self.temporal_anchor: np.ndarray | None = None
        self.eye_anchor: np.ndarray | None = None

    def restricted(self, frames: np.ndarray, temporal_anchor: np.ndarray | None = None,
                   settings: FitSettings | None = None, eye_anchor: np.ndarray | None = None) -> "ShotEnergy":
        """The same energy on some frames only (sharing the rig), optionally with E_temporal
        pulling the first of them towards fixed projected landmarks and eye rotations of the
        frame before, and with other weights."""
        out = copy.copy(self)
        if settings is not None:
            out.settings = settings
            out.expression_scales = expression_unit_scales(self.model.expression_names, settings.expression_unit_weights)
        out.present, out.mu, out.inv_sigma = self.present[frames], self.mu[frames], self.inv_sigma[frames]
        out.num_frames = len(frames)
        out.temporal_anchor = temporal_anchor
        out.eye_anchor = eye_anchor
        return out

    def projected_landmarks(self, params: Parameters) -> np.ndarray:
        """(N, C, 2, S') projected landmarks that E_temporal watches, for every frame."""
        points = point_rig.evaluate(self._rig_at(params.identity), params.identity, params.expression,
                                    params.rotations, params.translation_m).points
        if self.sliding is not None:
            closed_eyes.blend(self.sliding, self.closed_points, params.expression, points)
        points = points[:, self.landmark_points][:, self.temporal_subset]
        return np.stack([project(points, params.cameras, c, derivatives=False).pixels.transpose(0, 2, 1)
                         for c in range(params.cameras.count)], axis=1)

    # -- the whole energy -----------------------------------------------------------------
    def residual_vector(self, params: Parameters, layout: Layout) -> np.ndarray:
        """All residual rows (energy = 0.5 |r|^2), for generic least-squares solvers."""
        tally = _Tally(keep=True)
        self.evaluate(params, layout, False, tally=tally)
        return np.concatenate(tally.rows)

    def evaluate(self, params: Parameters, layout: Layout, derivatives: bool,
                 with_identity: bool = True, with_expression: bool = True, tally: _Tally | None = None,
                 with_shared: bool = True) -> Evaluation:
        """Energy, and with ``derivatives`` the normal equations. The ``with_*`` flags skip
        derivative blocks the caller will not solve for (their entries are left zero)."""
        n_frames = self.num_frames
        equations = NormalEquations(n_frames, layout.frame_size, layout.shared_size) if derivatives else None
        terms = _Tally() if tally is None else tally
        sum_sq = np.zeros(n_frames)
        count = self.present.sum(axis=(1, 2)) * 2
        previous = None
        chunk_size = max(1, self.settings.chunk_frames)
        for start in range(0, n_frames, chunk_size):
            frames = np.arange(start, min(start + chunk_size, n_frames))
            chunk = self._chunk(params, layout, frames, derivatives, with_identity, with_expression)
            projected = self._landmarks(chunk, params, layout, equations, terms, sum_sq, with_shared)
            if self.settings.temporal_weight > 0:
                previous = self._temporal(projected, previous, equations, terms)
            if self.geometry is not None:
                self._intersections(chunk, layout, equations, terms)
        self._priors(params, layout, equations, terms)
        self._size(params, layout, equations, terms)
        self._eyes(params, layout, equations, terms)
        self._depth(params, layout, equations, terms)
        self._steady_expressions(params, layout, equations, terms)
        with np.errstate(invalid="ignore", divide="ignore"):
            frame_rms = np.where(count > 0, np.sqrt(sum_sq / np.maximum(count, 1)), np.nan)
        return Evaluation(float(sum(terms.terms.values())), terms.terms, frame_rms, equations)

    def _chunk(self, params: Parameters, layout: Layout, frames: np.ndarray, derivatives: bool,
               with_identity: bool, with_expression: bool) -> _Chunk:
        rig = self._rig_at(params.identity)
        state = point_rig.evaluate(rig, params.identity, params.expression[frames], params.rotations[frames],
                                   params.translation_m[frames])
        if not derivatives:
            if self.sliding is not None:
                closed_eyes.blend(self.sliding, self.closed_points, params.expression[frames],
                                  state.points)
            return _Chunk(frames, state.points, None, None, state, None)
        n, num_points = state.points.shape[:2]
        d_frame = np.zeros((n, 3, num_points, layout.frame_size), dtype=np.float32)
        jac = point_rig.jacobians(rig, state, params.expression[frames], params.rotations[frames],
                                  with_identity=with_identity, with_expression=with_expression, frame_out=d_frame,
                                  frame_columns=(layout.expression_slice.start, layout.rotation_slice.start))
        for c in range(3):
            d_frame[:, c, :, layout.translation_slice.start + c] = 1.0
        d_identity = jac.identity if with_identity else None
        if d_identity is not None and with_expression and len(self.scaled_units):
            self._add_scale_derivatives(d_frame, d_identity, params, layout, frames)
        if self.sliding is not None:  # after the scale derivatives, which read the rig's own columns
            closed_eyes.blend(self.sliding, self.closed_points, params.expression[frames],
                              state.points, d_frame, d_identity,
                              layout.expression_slice.start if with_expression else None)
        return _Chunk(frames, state.points, d_frame, d_identity, state, jac)

    def _rig_at(self, identity: np.ndarray) -> point_rig.PointRig:
        """The point rig whose expression bases act with the head model's blend weights at
        ``identity`` (blink units scaled to the identity's lids), kept for the last identity."""
        if not len(self.scaled_units):
            return self.rig
        key = np.asarray(identity, np.float64).tobytes()
        if key not in self._scaled_rig:
            self._scaled_rig.clear()
            self._scaled_rig[key] = point_rig.with_unit_scales(self.rig, self.model.blend_scales(identity))
        return self._scaled_rig[key]

    def _add_scale_derivatives(self, d_frame: np.ndarray, d_identity: np.ndarray, params: Parameters,
                               layout: Layout, frames: np.ndarray) -> None:
        """The scaled units' weights w_k = psi_k s_k(beta), s_k = offset_k + gain_k . beta, also
        move with the identity: d/dbeta += sum_k d/dpsi_k (psi_k / s_k) gain_k (the rig at this
        identity gives d/dpsi_k = s_k d/dw_k)."""
        gain = self.model.blend_scale_terms[1]
        units = self.scaled_units
        scale = self.model.blend_scales(params.identity)[units]
        by_unit = d_frame[..., layout.expression_slice.start + units]       # (n, 3, P, K) copy
        ratio = np.divide(params.expression[frames][:, units], scale, out=np.zeros((len(frames), len(units))),
                          where=scale != 0)
        per_unit = (ratio[:, :, None] * gain[units][None]).astype(np.float32)  # (n, K, I)
        d_identity += (by_unit.reshape(len(frames), -1, len(units)) @ per_unit).reshape(d_identity.shape)

    # -- E_landmarks ------------------------------------------------------------------------
    def _landmarks(self, chunk: _Chunk, params: Parameters, layout: Layout,
                   equations: NormalEquations | None, terms: _Tally, sum_sq: np.ndarray,
                   with_shared: bool = True) -> list:
        """Adds the landmark rows; returns per camera (frames, (pixels, d_frame, d_shared)) of
        the landmarks E_temporal watches."""
        frames = chunk.frames
        lm = self.landmark_points
        points = chunk.points[:, lm]
        watched = self.temporal_subset
        projected = []
        for c in range(params.cameras.count):
            proj = project(points, params.cameras, c, derivatives=equations is not None)
            # Rows are ordered (coordinate, landmark), matching the Jacobians' layout.
            weight = self.inv_sigma[frames, c]                               # (n, S)
            pixels = proj.pixels.transpose(0, 2, 1)                         # (n, 2, S)
            residual = (pixels - self.mu[frames, c].transpose(0, 2, 1)) * weight[:, None]
            sum_sq[frames] += np.sum(residual ** 2, axis=(1, 2))
            terms.add("landmarks", residual)
            if equations is None:
                projected.append((pixels[:, :, watched], None, None))
                continue
            n = len(frames)
            rows, gradient = self._projected_rows(chunk, proj, layout, c, lm, weight, with_shared, residual)
            equations.add_stacked_rows(frames, residual.reshape(n, -1), rows.reshape(n, -1, rows.shape[-1]), gradient)
            # E_temporal differentiates the unweighted projection of the watched landmarks.
            plain, _ = self._projected_rows(chunk, proj, layout, c, watched, np.ones((n, len(watched))), with_shared)
            p = layout.frame_size
            projected.append((pixels[:, :, watched], plain[..., :p], plain[..., p:] if with_shared else None))
        return [(frames, p) for p in projected]

    def _projected_rows(self, chunk: _Chunk, proj, layout: Layout, camera: int, points, weight: np.ndarray,
                        with_shared: bool, residual: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None]:
        """(n, 2, S', p + q) float32 rows of projected points ``points`` (a slice or indices of the
        landmarks), scaled per point by ``weight`` (n, S'); q is 0 without shared columns. With
        the rows' ``residual`` (n, 2, S'), also J^T r (n, p + q) in float64."""
        n, p = len(chunk.frames), layout.frame_size
        d_world = proj.d_world[:, points]
        num = d_world.shape[1]
        width = p + (layout.shared_size if with_shared else 0)
        rows = np.zeros((n, 2, num, width), dtype=np.float32)
        gradient = np.zeros((n, width)) if residual is not None else None
        kernel_residual = residual if residual is not None else np.zeros((0, 0, 0))
        kernel_gradient = gradient if gradient is not None else np.zeros((0, 0))
        rig_kernels.project_rows(d_world, np.ascontiguousarray(chunk.d_frame[:, :, points]), weight, rows, 0,
                                 kernel_residual, kernel_gradient)
        if not with_shared:
            return rows, gradient
        if chunk.d_identity is not None:
            rig_kernels.project_rows(d_world, np.ascontiguousarray(chunk.d_identity[:, :, points]), weight, rows, p,
                                     kernel_residual, kernel_gradient)
        w = weight[:, None]
        camera_columns = []
        focal_col = layout.focal_column(camera)
        if focal_col is not None:
            rows[..., p + focal_col] = proj.d_log_focal[:, points].transpose(0, 2, 1) * w
            camera_columns.append(p + focal_col)
        extrinsic_cols = layout.extrinsic_columns(camera)
        if extrinsic_cols is not None:
            rows[..., p + extrinsic_cols.start: p + extrinsic_cols.stop] = (
                proj.d_extrinsics[:, points].transpose(0, 2, 1, 3) * w[..., None])
            camera_columns += range(p + extrinsic_cols.start, p + extrinsic_cols.stop)
        if gradient is not None and camera_columns:
            gradient[:, camera_columns] = np.einsum("nrsk,nrs->nk", rows[..., camera_columns], residual)
        return rows, gradient

    # -- E_temporal -------------------------------------------------------------------------
    def _temporal(self, projected: list, previous, equations: NormalEquations | None, terms: _Tally):
        """Rows w (x_i - x_{i-1}) on projected landmarks; ``previous`` carries the last frame
        of the previous chunk. Returns the carry for the next chunk."""
        weight = self.settings.temporal_weight
        carry = []
        for c, (frames, (pixels, d_frame, d_shared)) in enumerate(projected):
            if previous is not None:
                prev_frame, prev_pixels, prev_d_frame, prev_d_shared = previous[c]
                frames_all = np.concatenate([[prev_frame], frames])
                pixels_all = np.concatenate([prev_pixels, pixels])
                d_frame_all = None if d_frame is None else np.concatenate([prev_d_frame, d_frame])
                d_shared_all = (None if d_shared is None or prev_d_shared is None
                                else np.concatenate([prev_d_shared, d_shared]))
            else:
                frames_all, pixels_all, d_frame_all, d_shared_all = frames, pixels, d_frame, d_shared
                if self.temporal_anchor is not None:
                    residual = weight * (pixels[:1] - self.temporal_anchor[c])
                    terms.add("temporal", residual)
                    if equations is not None:
                        equations.add_frame_rows(frames[:1], residual.reshape(1, -1),
                                                 weight * d_frame[:1].reshape(1, -1, d_frame.shape[-1]),
                                                 None if d_shared is None else
                                                 weight * d_shared[:1].reshape(1, -1, d_shared.shape[-1]))
            carry.append((frames_all[-1], pixels_all[-1:],
                          None if d_frame_all is None else d_frame_all[-1:],
                          None if d_shared_all is None else d_shared_all[-1:]))
            if len(frames_all) < 2:
                continue
            residual = weight * (pixels_all[1:] - pixels_all[:-1])
            n = len(residual)
            terms.add("temporal", residual)
            if equations is None:
                continue
            p = d_frame_all.shape[-1]
            d_shared_pair = (None if d_shared_all is None else
                             weight * (d_shared_all[1:] - d_shared_all[:-1]).reshape(n, -1, d_shared_all.shape[-1]))
            equations.add_pair_rows(frames_all[1:], residual.reshape(n, -1),
                                    weight * d_frame_all[1:].reshape(n, -1, p),
                                    -weight * d_frame_all[:-1].reshape(n, -1, p), d_shared_pair)
        return carry

    # -- E_intersect ------------------------------------------------------------------------
    def _intersections(self, chunk: _Chunk, layout: Layout, equations: NormalEquations | None,
                       terms: _Tally) -> None:
        """Rows of penetration depths. Only vertices that penetrate in some frame of the chunk
        get Jacobian rows: the others' rows are zero (most lids and lips, most of the time)."""
        geometry = self.geometry
        weight = self.settings.intersect_weight_per_m
        n = len(chunk.frames)
        rows, hit_rows, d_frame_rows, d_identity_rows = [], [], [], []

        # Eyelids outside the eyeball spheres: r = w max(0, radius - |x - c|).
        eyelid = chunk.points[:, self.eyelid_points]
        eye_point = self.eye_points[geometry.eyelid_eye]
        offset = eyelid - chunk.points[:, eye_point]
        distance = np.linalg.norm(offset, axis=2)
        depth = geometry.eye_radii_m[geometry.eyelid_eye] - distance
        active = depth > 0
        rows.append(weight * np.where(active, depth, 0.0))
        hit = np.flatnonzero(active.any(axis=0))
        if equations is not None and len(hit):
            hit_rows.append(rows[-1][:, hit])
            normal = offset[:, hit] / np.maximum(distance[:, hit], 1e-12)[..., None]
            scale = np.where(active[:, hit], -weight, 0.0)[..., None]
            lid_ids, eye_ids = self.eyelid_points.start + hit, eye_point[hit]
            d_rel = chunk.d_frame[:, :, lid_ids] - chunk.d_frame[:, :, eye_ids]
            d_frame_rows.append(scale * np.einsum("nvc,ncvp->nvp", normal, d_rel))
            if chunk.d_identity is not None:
                d_rel_id = chunk.d_identity[:, :, lid_ids] - chunk.d_identity[:, :, eye_ids]
                d_identity_rows.append(scale * np.einsum("nvc,ncvk->nvk", normal, d_rel_id))

        # Lips outside the teeth hulls: r = w max(0, -max_h(n_h . x_local + p_h)),
        # x_local = R_joint^T (x - anchor).
        lips = self.lip_points
        for h, hull in enumerate(geometry.hulls):
            anchor_point = self.anchor_points[h]
            rotation = chunk.state.rotations_world[:, hull.joint]                     # (n, 3, 3)
            relative = chunk.points[:, lips] - chunk.points[:, [anchor_point]]          # (n, V, 3)
            local = np.einsum("ndc,nvd->nvc", rotation, relative)                    # R^T (x - o)
            signed = local @ hull.normals.T + hull.offsets                           # (n, V, H)
            nearest = np.argmax(signed, axis=2)
            depth = -np.max(signed, axis=2)
            active = depth > 0
            rows.append(weight * np.where(active, depth, 0.0))
            hit = np.flatnonzero(active.any(axis=0))
            if equations is None or not len(hit):
                continue
            hit_rows.append(rows[-1][:, hit])
            lip_ids, relative = lips.start + hit, relative[:, hit]
            # d x_local = R^T (dx - do + [x - o]x A_m) for rotations of the hull joint and its ancestors.
            plane_world = np.einsum("ncd,nvd->nvc", rotation, hull.normals[nearest[:, hit]])  # R n
            scale = np.where(active[:, hit], -weight, 0.0)[..., None]
            d_rel = chunk.d_frame[:, :, lip_ids] - chunk.d_frame[:, :, [anchor_point]]  # (n, 3, V', p)
            ancestors = np.flatnonzero(self.rig.subtree[:, hull.joint])
            rotation_cols = d_rel[..., layout.rotation_slice].reshape(n, 3, -1, layout.num_joints, 3)
            world_axes = chunk.jac.world_axes                                        # (n, J, 3, 3)
            for m in ancestors:
                rotation_cols[..., m, :] += (skew(relative) @ world_axes[:, None, m]).transpose(0, 2, 1, 3)
            d_rel[..., layout.rotation_slice] = rotation_cols.reshape(n, 3, -1, 3 * layout.num_joints)
            d_frame_rows.append(scale * np.einsum("nvc,ncvp->nvp", plane_world, d_rel))
            if chunk.d_identity is not None:
                d_rel_id = chunk.d_identity[:, :, lip_ids] - chunk.d_identity[:, :, [anchor_point]]
                d_identity_rows.append(scale * np.einsum("nvc,ncvk->nvk", plane_world, d_rel_id))

        terms.add("intersect", np.concatenate(rows, axis=1))
        if equations is None or not hit_rows:
            return
        d_frame = np.concatenate(d_frame_rows, axis=1)
        d_shared = None
        if d_identity_rows:
            d_shared = np.zeros(d_frame.shape[:2] + (layout.shared_size,))
            d_shared[..., : layout.num_identity] = np.concatenate(d_identity_rows, axis=1)
        equations.add_frame_rows(chunk.frames, np.concatenate(hit_rows, axis=1), d_frame, d_shared)

    # -- priors -------------------------------------------------------------------------------
    def _priors(self, params: Parameters, layout: Layout, equations: NormalEquations | None,
                terms: _Tally) -> None:
        s = self.settings
        # E_identity: -log of the prior mixture, as the squared Mahalanobis distance of the most
        # responsible component (exact for a single Gaussian, up to a constant).
        model = self.model
        means = np.asarray(model.identity_prior_means, np.float64)
        stds = np.asarray(model.identity_prior_stds, np.float64)
        log_weights = np.log(np.asarray(model.identity_prior_weights, np.float64))
        z = (params.identity[None] - means) / stds
        component = int(np.argmax(log_weights - 0.5 * np.sum(z * z, axis=1) - np.sum(np.log(stds), axis=1)))
        residual = np.sqrt(s.identity_weight) * z[component]
        terms.add("identity", residual)
        expression_sqrt = np.sqrt(s.expression_weight * self.expression_scales)
        expression_residual = expression_sqrt * params.expression
        terms.add("expression", expression_residual)
        # Opposing units both on cancel each other: r = w a b per pair, zero when either is off.
        pairs = self.opposing_pairs
        opposing_residual = np.sqrt(s.opposing_weight) * params.expression[:, pairs[:, 0]] * params.expression[:, pairs[:, 1]]
        terms.add("expression", opposing_residual)
        # Both eyes' lids follow one gaze: r = sqrt(w) (a - b) per conjugate pair of eyeLook units.
        conjugate = self.conjugate_pairs
        conjugate_residual = np.sqrt(s.look_coupling_weight) * (
            params.expression[:, conjugate[:, 0]] - params.expression[:, conjugate[:, 1]])
        terms.add("expression", conjugate_residual)
        joints_residual = np.sqrt(s.joint_weight) * params.rotations[:, 1:].reshape(params.num_frames, -1)
        terms.add("joints", joints_residual)
        if equations is None:
            return
        if layout.num_identity:
            jac = np.zeros((layout.num_identity, layout.shared_size))
            jac[:, : layout.num_identity] = np.diag(np.sqrt(s.identity_weight) / stds[component])
            equations.add_shared_rows(residual, jac)
        equations.add_frame_diagonal(layout.expression_slice, expression_residual, expression_sqrt)
        start = layout.expression_slice.start
        if len(pairs):
            equations.add_frame_column_pairs(start + pairs[:, 0], start + pairs[:, 1], opposing_residual,
                                             np.sqrt(s.opposing_weight) * params.expression[:, pairs[:, 1]],
                                             np.sqrt(s.opposing_weight) * params.expression[:, pairs[:, 0]])
        if len(conjugate):
            equations.add_frame_differences(start + conjugate[:, 0], start + conjugate[:, 1], conjugate_residual,
                                            np.sqrt(s.look_coupling_weight))
        rot = layout.rotation_slice
        equations.add_frame_diagonal(slice(rot.start + 3, rot.stop), joints_residual, np.sqrt(s.joint_weight))

    # -- the eyes: conjugate gaze (E_joints) and their change between frames (E_temporal) --------
    def _eyes(self, params: Parameters, layout: Layout, equations: NormalEquations | None,
              terms: _Tally) -> None:
        s = self.settings
        eyes = np.asarray(self.model.eyeball_joints)
        n = params.num_frames
        columns = layout.rotation_slice.start + 3 * eyes[:, None] + np.arange(3)      # (2, 3): left, right
        if s.eye_coupling_weight > 0:
            w = s.eye_coupling_weight
            residual = w * (params.rotations[:, eyes[0]] - params.rotations[:, eyes[1]])  # (N, 3)
            terms.add("joints", residual)
            if equations is not None:
                equations.add_frame_differences(columns[0], columns[1], residual, w)
        if s.temporal_weight > 0 and s.eye_temporal_weight > 0:
            _parameter_changes(params.rotations[:, eyes].reshape(n, 6), columns.ravel(), s.eye_temporal_weight,
                               self.eye_anchor, layout, equations, terms)

    def _size(self, params: Parameters, layout: Layout, equations: NormalEquations | None, terms: _Tally) -> None:
        """E_size: a row w 100 (length(beta) - target) / target (:class:`SizeRow`): the neutral
        head's size against the prior's mean, where no camera pair sees the scale (one camera, or
        the others' extrinsics unknown), or the eyeball centres' distance against the actor's
        measured pupil distance, on any cameras (:mod:`fitter_backend.head_models.head_size`)."""
        row = self.size_row
        if row is None or (not row.measured and params.cameras.see_scale):
            return
        residual = np.array([row.residual(params.identity)])
        terms.add("identity", residual)
        if equations is not None and layout.num_identity:
            jac = np.zeros((1, layout.shared_size))
            jac[0, : layout.num_identity] = row.gain
            equations.add_shared_rows(residual, jac)

    def _depth(self, params: Parameters, layout: Layout, equations: NormalEquations | None, terms: _Tally) -> None:
        """Rows w (z_i - z_{i-1}) on the head's distance along camera 0's axis (world Z)."""
        s = self.settings
        if s.temporal_weight > 0 and s.depth_temporal_weight > 0:
            _parameter_changes(params.translation_m[:, 2:], np.array([layout.translation_slice.start + 2]),
                               s.depth_temporal_weight, None, layout, equations, terms)

    def _steady_expressions(self, params: Parameters, layout: Layout, equations: NormalEquations | None,
                            terms: _Tally) -> None:
        """Rows w (psi_i - psi_{i-1}) on the steady ARKit units (``HeadModel.steady_expressions``)."""
        s, units = self.settings, self.steady_units
        if s.temporal_weight > 0 and s.expression_temporal_weight > 0 and len(units):
            _parameter_changes(params.expression[:, units], layout.expression_slice.start + units,
                               s.expression_temporal_weight, None, layout, equations, terms)
