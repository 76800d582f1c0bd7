"""Head-model files that are not what they claim (issue 15 D11, D12): bad metadata, float triangles,
a complex template, float eyeball indices. Each is one HeadModelError naming the file and the
entry (they loaded, or ended in a raw traceback)."""
import json

import numpy as np
import pytest

from fitter_backend.errors import HeadModelError
from fitter_backend.head_models.loading import load_head_model
from tests.toy_heads import toy_head


def tampered(tmp_path, **changes) -> str:
    path = toy_head(seed=1).save_npz(tmp_path / "head.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(arrays["meta_json"].tobytes())
    for key, value in changes.items():
        if key.startswith("meta_"):
            meta = value(meta)
        else:
            arrays[key] = value(arrays[key])
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("changes, words", [
    ({"triangles": lambda a: a.astype(np.float64) + 0.5}, "triangles must hold integers"),
    ({"template": lambda a: a.astype(np.complex128)}, "template must hold real numbers"),
    ({"eyeball_joints": lambda a: a.astype(np.float64)}, "eyeball_joints must hold integers"),
    ({"template": lambda a: np.where(a == a.max(), np.nan, a)}, "template contains NaN or infinite values"),
    ({"meta_": lambda m: [m]}, "metadata must be a JSON object"),
    ({"meta_": lambda m: {**m, "expression_names": 7}}, "metadata 'expression_names' must be a list of names"),
    ({"meta_": lambda m: {**m, "name": {"a": 1}}}, "metadata 'name' must be a string"),
])
def test_a_damaged_head_file_is_one_clear_error(tmp_path, changes, words):
    path = tampered(tmp_path, **changes)
    with pytest.raises(HeadModelError) as raised:
        load_head_model(path)
    assert words in str(raised.value) and "head.npz" in str(raised.value), str(raised.value)
