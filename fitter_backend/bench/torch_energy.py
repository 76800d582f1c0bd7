"""The fitter's energy reimplemented in PyTorch (float64, autograd), for the L-BFGS baseline
(the paper's offline solver, section 3.3).

A port of :class:`fitter_backend.fitting.energy.ShotEnergy`, term for term: the point
rig's forward pass (precombined (point, joint) pair bases, Rodrigues, kinematic chain),
the pinhole projection, and E_landmarks, E_temporal, E_intersect and the priors. It
reuses the ShotEnergy's rig, intersection geometry and observation arrays, so both see
exactly the same problem; tests check the two energies agree.

The unknowns are the flat vector x of :mod:`fitter_backend.bench.flat` (per-frame blocks
then shared unknowns, a step from a start point), so every solver moves the same variables.
"""
from __future__ import annotations

import numpy as np
import torch

from fitter_backend.fitting.energy import ShotEnergy
from fitter_backend.fitting.problem import Layout, Parameters

DTYPE = torch.float64


def _tensor(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float64), dtype=DTYPE)


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack([torch.stack([zero, -z, y], -1),
                        torch.stack([z, zero, -x], -1),
                        torch.stack([-y, x, zero], -1)], -2)


def rodrigues(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> (..., 3, 3), with the same small-angle series as the numpy
    version (and finite gradients at zero, where sqrt is not differentiable)."""
    theta2 = torch.sum(rotvec * rotvec, dim=-1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(safe2)
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / safe2)
    k = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


class TorchShotEnergy:
    """E(x) of one shot for a flat step x from ``start`` (see :mod:`fitter_backend.bench.flat`)."""

    def __init__(self, energy: ShotEnergy, layout: Layout, start: Parameters):
        if energy.temporal_anchor is not None:
            raise ValueError("the torch energy covers whole shots, not restricted real-time energies")
        if energy.sliding is not None:  # the benchmark's landmarks are exact surface points
            raise ValueError("the torch energy does not move landmarks with the lids (fitting/closed_eyes.py)")
        rig = energy.rig
        self.settings = energy.settings
        self.expression_scales = energy.expression_scales  # (E,) per-unit prior multipliers
        offset, gain = energy.model.blend_scale_terms  # blend weight = psi (offset + gain . beta)
        self.blend_offset, self.blend_gain = _tensor(offset), _tensor(gain)
        self.opposing_pairs = energy.opposing_pairs  # (K, 2): opposing ARKit units pay for their product
        self.conjugate_pairs = energy.conjugate_pairs  # (K, 2): both eyes' eyeLook units pay for their difference
        self.steady_units = torch.as_tensor(energy.steady_units, dtype=torch.long)  # E_temporal on these weights
        self.eyes = torch.as_tensor(np.asarray(energy.model.eyeball_joints, dtype=np.int64))  # (2,): left, right
        self.layout = layout
        self.num_frames = start.num_frames
        # Point rig (numpy arrays of ShotEnergy, as float64 tensors).
        self.pair_point = torch.as_tensor(rig.pair_point, dtype=torch.long)
        self.pair_joint = torch.as_tensor(rig.pair_joint, dtype=torch.long)
        self.pair_weight = _tensor(rig.pair_weight)[None, :, None]
        self.pair_template = _tensor(rig.pair_template)
        self.pair_identity = _tensor(rig.pair_identity)
        self.pair_expression = _tensor(rig.pair_expression)
        self.pair_correctives = _tensor(rig.pair_correctives)
        self.joint_template = _tensor(rig.joint_template)
        self.joint_identity = _tensor(rig.joint_identity)
        self.joint_expression = _tensor(rig.joint_expression)
        self.parents = [int(p) for p in rig.parents]
        self.num_points = rig.num_points
        # Observations (missing landmarks have mu 0 and inverse sigma 0, as in ShotEnergy).
        self.landmarks = torch.arange(energy.landmark_points.start, energy.landmark_points.stop)
        self.mu = _tensor(energy.mu)                        # (N, C, S, 2)
        self.inv_sigma = _tensor(energy.inv_sigma)          # (N, C, S)
        self.temporal_subset = torch.as_tensor(energy.temporal_subset, dtype=torch.long)
        # Cameras: the start point; steps follow Layout.apply.
        cameras = start.cameras
        self.image_centre = _tensor(cameras.principal_point_px)
        self.focal0 = _tensor(cameras.focal_px)
        self.camera_rotation0 = _tensor(cameras.rotation)
        self.camera_translation0 = _tensor(cameras.translation_m)
        self.identity0 = _tensor(start.identity)
        self.expression0 = _tensor(start.expression)
        self.rotations0 = _tensor(start.rotations)
        self.translation0 = _tensor(start.translation_m)
        # Priors.
        model = energy.model
        self.prior_means = _tensor(model.identity_prior_means)
        self.prior_stds = _tensor(model.identity_prior_stds)
        self.prior_log_weights = torch.log(_tensor(model.identity_prior_weights))
        # E_size (ShotEnergy._size): linear in the identity.
        row = energy.size_row
        self.size_row = None if row is None or (not row.measured and cameras.see_scale) else row
        if self.size_row is not None:
            self.size_gain = _tensor(row.gain)
            self.size_offset = row.residual(row.line.reference)
            self.size_reference = _tensor(row.line.reference)
        # E_intersect.
        self.geometry = energy.geometry
        if self.geometry is not None:
            g = self.geometry
            self.eyelid_points = torch.arange(energy.eyelid_points.start, energy.eyelid_points.stop)
            self.lip_points = torch.arange(energy.lip_points.start, energy.lip_points.stop)
            eye_points = torch.as_tensor(energy.eye_points, dtype=torch.long)
            eyelid_eye = torch.as_tensor(g.eyelid_eye, dtype=torch.long)
            self.eyelid_eye_points = eye_points[eyelid_eye]
            self.eyelid_radius = _tensor(g.eye_radii_m)[eyelid_eye]
            # Each hull: its joint, the rig point it is anchored at, its planes.
            self.hulls = [(h.joint, int(energy.anchor_points[k]), _tensor(h.normals), _tensor(h.offsets))
                          for k, h in enumerate(g.hulls)]

    # -- the parameters of a flat step ----------------------------------------------------
    def unpack(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameters at start + x, as :meth:`Layout.apply` moves them."""
        lay, n = self.layout, self.num_frames
        frames = x[: n * lay.frame_size].reshape(n, lay.frame_size)
        shared = x[n * lay.frame_size:]
        focal, camera_rotation, camera_translation = [], [], []
        for c in range(len(self.focal0)):
            focal_col, extrinsic_cols = lay.focal_column(c), lay.extrinsic_columns(c)
            focal.append(self.focal0[c] if focal_col is None else self.focal0[c] * torch.exp(shared[focal_col]))
            if extrinsic_cols is None:
                camera_rotation.append(self.camera_rotation0[c])
                camera_translation.append(self.camera_translation0[c])
            else:
                camera_rotation.append(self.camera_rotation0[c] + shared[extrinsic_cols][:3])
                camera_translation.append(self.camera_translation0[c] + shared[extrinsic_cols][3:])
        return {
            "identity": self.identity0 + shared[: lay.num_identity],
            "expression": self.expression0 + frames[:, lay.expression_slice],
            "rotations": self.rotations0 + frames[:, lay.rotation_slice].reshape(n, lay.num_joints, 3),
            "translation": self.translation0 + frames[:, lay.translation_slice],
            "focal": torch.stack(focal),
            "camera_rotation": torch.stack(camera_rotation),
            "camera_translation": torch.stack(camera_translation),
        }

    # -- forward model ----------------------------------------------------------------------
    def points(self, identity, expression, rotations, translation) -> tuple[torch.Tensor, torch.Tensor]:
        """World positions (N, P, 3) of the rig's points and world joint rotations (N, J, 3, 3)."""
        joints = (self.joint_template + self.joint_identity @ identity)[None] + torch.einsum(
            "jck,nk->njc", self.joint_expression, expression)
        local_rotations = rodrigues(rotations)
        world = [local_rotations[:, 0]]
        origins = [joints[:, 0]]
        for j in range(1, len(self.parents)):
            p = self.parents[j]
            world.append(world[p] @ local_rotations[:, j])
            origins.append(origins[p] + torch.einsum("ncd,nd->nc", world[p], joints[:, j] - joints[:, p]))
        rotations_world, origins_world = torch.stack(world, 1), torch.stack(origins, 1)
        rest = (self.pair_template + self.pair_identity @ identity)[None] + torch.einsum(
            "qck,nk->nqc", self.pair_expression, expression)
        if self.pair_correctives.shape[2]:
            feature = (local_rotations[:, 1:] - torch.eye(3, dtype=DTYPE)).reshape(len(expression), -1)
            rest = rest + torch.einsum("qcp,np->nqc", self.pair_correctives, feature)
        j = self.pair_joint
        local = rest - self.pair_weight * joints[:, j]
        moved = torch.einsum("nqcd,nqd->nqc", rotations_world[:, j], local) + self.pair_weight * origins_world[:, j]
        points = torch.zeros(len(expression), self.num_points, 3, dtype=DTYPE).index_add(1, self.pair_point, moved)
        return points + translation[:, None, :], rotations_world

    def project(self, points: torch.Tensor, p: dict[str, torch.Tensor], camera: int) -> torch.Tensor:
        """Pixels (N, S, 2) of world points in one camera (depth clamped at 1 mm, as in cameras.project)."""
        rotation = rodrigues(p["camera_rotation"][camera])
        camera_points = points @ rotation.T + p["camera_translation"][camera]
        depth = torch.clamp(-camera_points[..., 2], min=1e-3)
        focal = p["focal"][camera]
        cx, cy = self.image_centre[camera]
        return torch.stack([cx + focal * camera_points[..., 0] / depth,
                            cy - focal * camera_points[..., 1] / depth], dim=-1)

    # -- the energy ---------------------------------------------------------------------------
    def residuals(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Residual rows of every term (energy = 0.5 sum of squares)."""
        s = self.settings
        p = self.unpack(x)
        weights = p["expression"] * (self.blend_offset + self.blend_gain @ p["identity"])
        points, rotations_world = self.points(p["identity"], weights, p["rotations"], p["translation"])
        landmark_points = points[:, self.landmarks]
        out = {"landmarks": [], "temporal": []}
        for c in range(self.mu.shape[1]):
            pixels = self.project(landmark_points, p, c)
            out["landmarks"].append((pixels - self.mu[:, c]) * self.inv_sigma[:, c, :, None])
            if s.temporal_weight > 0:
                watched = pixels[:, self.temporal_subset]
                out["temporal"].append(s.temporal_weight * (watched[1:] - watched[:-1]))
        eyes = p["rotations"][:, self.eyes]                                              # (N, 2, 3)
        if s.temporal_weight > 0:
            out["temporal"].append(s.eye_temporal_weight * (eyes[1:] - eyes[:-1]))
            depth = p["translation"][:, 2]
            out["temporal"].append(s.depth_temporal_weight * (depth[1:] - depth[:-1]))
            steady = p["expression"][:, self.steady_units]
            out["temporal"].append(s.expression_temporal_weight * (steady[1:] - steady[:-1]))
        residuals = {term: torch.cat([r.reshape(-1) for r in rows]) if rows else torch.zeros(0, dtype=DTYPE)
                     for term, rows in out.items()}
        residuals["intersect"] = self._intersections(points, rotations_world)
        # E_identity: the most responsible mixture component (a discrete choice, as in ShotEnergy).
        z = (p["identity"][None] - self.prior_means) / self.prior_stds
        with torch.no_grad():
            score = self.prior_log_weights - 0.5 * torch.sum(z * z, 1) - torch.sum(torch.log(self.prior_stds), 1)
            component = int(torch.argmax(score))
        residuals["identity"] = np.sqrt(s.identity_weight) * z[component]
        if self.size_row is not None:
            size = self.size_gain @ (p["identity"] - self.size_reference) + self.size_offset
            residuals["identity"] = torch.cat([residuals["identity"], size.reshape(1)])
        pairs = torch.as_tensor(self.opposing_pairs)
        opposing = np.sqrt(s.opposing_weight) * p["expression"][:, pairs[:, 0]] * p["expression"][:, pairs[:, 1]]
        conjugate = torch.as_tensor(self.conjugate_pairs)
        alike = np.sqrt(s.look_coupling_weight) * (p["expression"][:, conjugate[:, 0]] - p["expression"][:, conjugate[:, 1]])
        expression_sqrt = torch.as_tensor(np.sqrt(s.expression_weight * self.expression_scales))
        residuals["expression"] = torch.cat([(expression_sqrt * p["expression"]).reshape(-1),
                                             opposing.reshape(-1), alike.reshape(-1)])
        residuals["joints"] = torch.cat([np.sqrt(s.joint_weight) * p["rotations"][:, 1:].reshape(-1),
                                         (s.eye_coupling_weight * (eyes[:, 0] - eyes[:, 1])).reshape(-1)])
        return residuals

    def _intersections(self, points: torch.Tensor, rotations_world: torch.Tensor) -> torch.Tensor:
        if self.geometry is None:
            return torch.zeros(0, dtype=DTYPE)
        weight = self.settings.intersect_weight_per_m
        rows = []
        # Eyelids outside the eyeball spheres.
        offset = points[:, self.eyelid_points] - points[:, self.eyelid_eye_points]
        depth = self.eyelid_radius - torch.linalg.norm(offset, dim=2)
        rows.append(weight * torch.relu(depth))
        # Lips outside the teeth hulls (in the hull joint's frame, relative to its anchor).
        for joint, anchor_point, normals, offsets in self.hulls:
            relative = points[:, self.lip_points] - points[:, [anchor_point]]
            local = torch.einsum("ndc,nvd->nvc", rotations_world[:, joint], relative)
            signed = local @ normals.T + offsets
            rows.append(weight * torch.relu(-torch.max(signed, dim=2).values))
        return torch.cat([r.reshape(-1) for r in rows])

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """0.5 |r(x)|^2, a scalar tensor."""
        return 0.5 * sum(torch.sum(r * r) for r in self.residuals(x).values())
