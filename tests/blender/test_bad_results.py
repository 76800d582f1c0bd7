"""Hostile or damaged result folders (issue 15, D6/D7/D11/D12 on the add-on's side): each one is
refused with one message naming the file and the value, and the scene is left exactly as it was."""
import hashlib
import io
import json
import os
import tracemalloc
import zipfile

import bpy
import numpy as np
import pytest

import facecap_helpers as h


def small_result(tmp_path, name="bad", **changes):
    """A tiny valid job folder, with ``changes`` ('rig.key' or 'animation.key' -> array) applied."""
    rig, animation = h.synthetic_result_arrays(frames=5, channels=4, grid=6)
    for key, value in changes.items():
        part, array = key.split(".", 1)
        (rig if part == "rig" else animation)[array] = value
    return h.write_result_folder(tmp_path / name, rig, animation, {"take": name, "frame_offset": 1})


def rewrite_manifest(folder):
    """Recompute result.json's sizes and hashes after a file was replaced on purpose."""
    result = folder / "result"
    manifest = json.loads((result / "result.json").read_text())
    for name in manifest["files"]:
        data = (result / name).read_bytes()
        manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (result / "result.json").write_text(json.dumps(manifest))


def refused(folder, match):
    """Import ``folder`` through the operator's function: one clear error, the scene unchanged."""
    from facecap import operators
    before = h.scene_snapshot()
    with pytest.raises(operators.ERRORS, match=match) as info:
        operators.import_job(bpy.context, folder)
    assert h.scene_snapshot() == before, f"the scene changed although the import failed: {info.value}"
    return str(info.value)


def test_a_valid_small_result_imports(addon, tmp_path):
    from facecap import operators
    report = operators.import_job(bpy.context, small_result(tmp_path, "good"))
    assert report.frame_start == 1 and report.frame_end == 5


# -- D6: names Blender cannot hold, refused before anything is built ------------------------
def test_a_joint_name_longer_than_blender_allows_is_refused_before_the_scene_changes(addon, tmp_path):
    names = np.array(["root", "neck", "head", "jaw" + "x" * 70, "eye_L", "eye_R"])
    message = refused(small_result(tmp_path, **{"rig.joint_names": names}), "joint name")
    assert "63" in message


def test_expression_names_that_collide_in_blender_are_refused_before_the_scene_changes(addon, tmp_path):
    long_names = np.array(["a" * 63 + "1", "a" * 63 + "2", "c", "d"])
    refused(small_result(tmp_path, "long", **{"rig.expression_names": long_names}), "expression name")
    quoted = np.array(['x"].value', "b", "c", "d"])
    refused(small_result(tmp_path, "quoted", **{"rig.expression_names": quoted}), "expression name")


# -- D7: sizes declared in the npz are checked before any array is loaded ---------------------
def npz_member_header(shape, dtype="<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_an_unused_huge_member_is_never_loaded(addon, tmp_path):
    from facecap import operators
    folder = small_result(tmp_path)
    # 200 MB of zeros, deflated to a few hundred kB, next to the arrays the rig needs.
    with zipfile.ZipFile(folder / "result" / "animation.npz", "a", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("padding.npy", "w", force_zip64=True) as member:
            member.write(npz_member_header((50_000_000,)))
            block = bytes(4_000_000)
            for _ in range(50):
                member.write(block)
    rewrite_manifest(folder)
    tracemalloc.start()
    try:
        operators.import_job(bpy.context, folder)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"peak traced memory of the import: {peak_bytes / 1e6:.1f} MB")
    assert peak_bytes < 50e6


def test_a_declared_shape_larger_than_the_rig_needs_is_refused_before_loading(addon, tmp_path):
    folder = small_result(tmp_path)
    path = folder / "result" / "animation.npz"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist() if name != "joint_rotations.npy"}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        # 5 frames x 6 joints x 3 is what the rig needs; the header declares 3 GB (data truncated).
        archive.writestr("joint_rotations.npy", npz_member_header((5, 6, 3 * 50_000_000)) + bytes(64))
    rewrite_manifest(folder)
    refused(folder, r"joint_rotations.*\(5, 6, 150000000\).*expected")


# -- D11: malformed JSON -------------------------------------------------------------------
def test_deeply_nested_result_json_is_one_clear_error(addon, tmp_path):
    folder = small_result(tmp_path)
    (folder / "result" / "result.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(folder, "result.json")


def test_deeply_nested_job_json_is_one_clear_error(addon, tmp_path):
    folder = small_result(tmp_path)
    (folder / "job.json").write_text('{"blender": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(folder, "job.json")


@pytest.mark.parametrize("blender", [
    {"take": "t", "frame_offset": 1, "views": [1, 2]},
    {"take": "t", "frame_offset": 1, "views": "ab"},
    {"take": {"a": 1}, "frame_offset": 1},
    {"take": "t", "frame_offset": [1]},
    {"take": "t", "frame_offset": 1, "scene": 5},
    {"take": "t", "frame_offset": 1_048_572},
])
def test_wrongly_typed_job_json_fields_are_one_clear_error(addon, tmp_path, blender):
    folder = small_result(tmp_path)
    (folder / "job.json").write_text(json.dumps({"request": {}, "blender": blender}))
    refused(folder, "job.json")


def test_a_manifest_with_wrong_types_is_one_clear_error(addon, tmp_path):
    folder = small_result(tmp_path)
    manifest = json.loads((folder / "result" / "result.json").read_text())
    manifest["files"]["rig.npz"]["bytes"] = {"a": 1}
    (folder / "result" / "result.json").write_text(json.dumps(manifest))
    refused(folder, "rig.npz")
    manifest = json.loads((folder / "result" / "result.json").read_text())
    manifest["files"]["rig.npz"]["bytes"] = (folder / "result" / "rig.npz").stat().st_size
    manifest["job"] = ["x"] * 3
    (folder / "result" / "result.json").write_text(json.dumps(manifest))
    refused(folder, "result.json: 'job'")


# -- D12: values that are finite but not usable ------------------------------------------------
@pytest.mark.parametrize("key, value, match", [
    ("animation.fps", np.array(0.0), "fps"),
    ("animation.fps", np.array(-25.0), "fps"),
    ("animation.camera_matrix_world", np.zeros((1, 4, 4)), "camera_matrix_world"),
    ("animation.translation_m", np.full((5, 3), 3e38, dtype=np.float32), "translation_m"),
    ("animation.expression", np.full((5, 4), 3e38, dtype=np.float32), "expression"),
    ("animation.focal_px", np.array([3e38]), "focal_px"),
    ("rig.vertices", np.full((36, 3), 3e38, dtype=np.float32), "vertices"),
    ("rig.skin_weight", np.full(36, -1e30, dtype=np.float32), "skin_weight"),
    ("animation.frame_indices", np.arange(5) + 2 ** 24, "frame_indices"),
])
def test_unusable_values_are_refused(addon, tmp_path, key, value, match):
    refused(small_result(tmp_path, **{key: value}), match)


def test_a_rig_npz_symlink_out_of_the_folder_is_refused(addon, tmp_path):
    folder = small_result(tmp_path)
    outside = tmp_path / "elsewhere.npz"
    os.replace(folder / "result" / "rig.npz", outside)
    os.symlink(outside, folder / "result" / "rig.npz")
    refused(folder, "rig.npz")
