"""The 468-point face mesh with the attention mesh's lids, as one ONNX model (set-up time only).

MediaPipe's attention mesh (``face_landmark_with_attention.tflite``, the ``mediapipe==0.10.21``
wheel) sees the same 192 px face crop as the 468-point mesh and refines its lips, eyes and irises
inside the network (:mod:`fitter_backend.model_setup.mediapipe_ops`). Its lids close on real and
rendered blinks where the plain mesh's barely move and the iris model's stop at a slit; its
refined lips shake twice as much from frame to frame as the plain mesh's and its unrefined ones
follow rendered mouths less well (docs/landmark_models.md, section 3b). So the model built here
runs both networks on the one input and returns the plain mesh's points with each eye's lid
contour (the 16 points MediaPipe's "eyes" region names) taken from the attention mesh, in
MediaPipe's own refinement order (``tensors_to_face_landmarks_with_attention.pbtxt``; z stays the
plain mesh's). Its contract is the 468-point mesh's: :data:`OUTPUT` (B, 1, 1, 468 x 3) and the
plain mesh's presence logit.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper
from onnx.utils import Extractor

from fitter_backend.landmarks.eye_refine import MESH_INDICES, REFINED_POINTS

OUTPUT = "refined_landmarks"
MESH_POINTS = 468
#: Inside the combined model the attention mesh's tensors carry this prefix.
PREFIX = "attention/"
#: The attention mesh's eye outputs (71 points each, the lid contour first) -> mesh indices. Its
#: "left eye" is the image's left, i.e. the subject's right eye (corners 33 and 133).
LID_OUTPUTS = {"output_left_eye": MESH_INDICES["right"][:REFINED_POINTS],
               "output_right_eye": MESH_INDICES["left"][:REFINED_POINTS]}
EYE_OUTPUT_POINTS = 71


def _lid_nodes(mesh_output: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes that put the attention mesh's lid points into the mesh's (B, 1, 1, 1404) output."""
    nodes, initializers = [], []

    def const(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(op: str, inputs: list[str], output: str, **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    axis = {k: const(f"lids_axis_{k}", np.array([k], np.int64)) for k in (1, 2)}
    zero = const("lids_zero", np.array([0], np.int64))
    mesh = node("Reshape", [mesh_output, const("lids_mesh_shape", np.array([-1, MESH_POINTS, 3], np.int64))],
                "lids_mesh")
    xy = node("Slice", [mesh, zero, const("lids_two", np.array([2], np.int64)), axis[2]], "lids_xy_0")
    z = node("Slice", [mesh, const("lids_z_start", np.array([2], np.int64)), const("lids_three", np.array([3], np.int64)),
                       axis[2]], "lids_z")
    for step, (output, indices) in enumerate(LID_OUTPUTS.items(), start=1):
        eye = node("Reshape", [PREFIX + output, const(f"lids_eye_shape_{step}", np.array([-1, EYE_OUTPUT_POINTS, 2],
                                                                                          np.int64))], f"lids_eye_{step}")
        lids = node("Slice", [eye, zero, const(f"lids_count_{step}", np.array([len(indices)], np.int64)), axis[1]],
                    f"lids_points_{step}")
        where = node("Expand", [const(f"lids_indices_{step}", np.repeat(np.array(indices, np.int64)[None, :, None], 2, 2)),
                                node("Shape", [lids], f"lids_points_shape_{step}")], f"lids_where_{step}")
        xy = node("ScatterElements", [xy, where, lids], f"lids_xy_{step}", axis=1)
    refined = node("Concat", [xy, z], "lids_xyz", axis=2)
    node("Reshape", [refined, const("lids_out_shape", np.array([-1, 1, 1, MESH_POINTS * 3], np.int64))], OUTPUT)
    return nodes, initializers


def face_mesh_with_attention_lids(face_mesh: onnx.ModelProto, mesh_output: str, attention: onnx.ModelProto
                                  ) -> onnx.ModelProto:
    """The converted 468-point mesh (``mesh_output``: its (B, 1, 1, 1404) points) and attention
    mesh, both reading the mesh's input, with :data:`OUTPUT` added first: the mesh's points with
    the attention mesh's lids."""
    (face_input,) = face_mesh.graph.input
    (attention_input,) = attention.graph.input
    attention = compose.add_prefix(attention, PREFIX)
    renamed = PREFIX + attention_input.name
    for attention_node in attention.graph.node:
        attention_node.input[:] = [face_input.name if name == renamed else name for name in attention_node.input]
    model = onnx.ModelProto()
    model.CopyFrom(face_mesh)
    graph = model.graph
    graph.node.extend(attention.graph.node)
    graph.initializer.extend(attention.graph.initializer)
    nodes, initializers = _lid_nodes(mesh_output)
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    graph.output.insert(0, helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1, 1, MESH_POINTS * 3]))
    # Only what the outputs need: the attention mesh's lips, irises and face flag would run on
    # every frame for nothing (504 nodes instead of 738, about 1.3 ms a crop).
    model = Extractor(model).extract_model([face_input.name], [output.name for output in graph.output])
    onnx.checker.check_model(model)
    return model
