"""The restricted unpickler: arrays come back, code never runs.

Every attack payload tries to create a marker file. Each test first checks that our loader
refuses it and the marker does not exist, then runs the same file through the standard
unpickler in a child process to prove the payload is real (the marker appears).
"""
from __future__ import annotations

import copyreg
import io
import pickle
import pickletools
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from fitter_backend.errors import HeadModelError, UnsafePickleError
from fitter_backend.head_models.safe_pickle import ChumpyStandIn, SparseStandIn, as_array, safe_load
from fitter_backend.head_models.synthetic_flame import dump_python2


# -- building pickles by opcode ------------------------------------------------------------
def text(value: str) -> bytes:
    """BINUNICODE: a str on the unpickler's stack."""
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def stack_glob(module: str, name: str) -> bytes:
    return text(module) + text(name) + b"\x93"


def call(function: bytes, *args: bytes) -> bytes:
    """function(*args) via MARK ... TUPLE REDUCE."""
    return function + b"(" + b"".join(args) + b"tR"


def payload_file(tmp_path: Path, body: bytes, protocol: int = 2) -> Path:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80" + bytes([protocol]) + body + b".")
    return path


def marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


ATTACKS = {
    "os.system": lambda m: call(glob("os", "system"), text(f"touch '{m}'")),
    "posix.system": lambda m: call(glob("posix", "system"), text(f"touch '{m}'")),
    "builtins.eval": lambda m: call(glob("builtins", "eval"), text(marker_code(m))),
    "__builtin__.exec": lambda m: call(glob("__builtin__", "exec"), text(marker_code(m))),
    "builtins.getattr": lambda m: call(
        call(glob("builtins", "getattr"), call(glob("builtins", "__import__"), text("os")), text("system")),
        text(f"touch '{m}'")),
    "subprocess.check_call": lambda m: call(glob("subprocess", "check_call"),
                                            b"]" + b"(" + text("touch") + text(str(m)) + b"e"),
    # copyreg._reconstructor is admitted for stand-ins only; here it is asked to build a
    # logging.FileHandler, whose __init__ creates the file.
    "copyreg._reconstructor": lambda m: call(glob("copyreg", "_reconstructor"), glob("logging", "FileHandler"),
                                             glob("logging", "FileHandler"), text(str(m))),
    # Dotted names reach through a numpy module that *is* admitted (for _frombuffer).
    "numpy lookalike builtins.exec": lambda m: call(stack_glob("numpy._core.numeric", "builtins.exec"),
                                                    text(marker_code(m))),
    "numpy lookalike os.system": lambda m: call(stack_glob("numpy.lib._npyio_impl", "os.system"),
                                                text(f"touch '{m}'")),
    "STACK_GLOBAL os.system": lambda m: call(stack_glob("os", "system"), text(f"touch '{m}'")),
    "INST": lambda m: b"(" + text(f"touch '{m}'") + b"ios\nsystem\n",
    "OBJ": lambda m: b"(" + glob("os", "system") + text(f"touch '{m}'") + b"o",
    # Classes in admitted modules that are not themselves admitted.
    "numpy.memmap": lambda m: call(glob("numpy", "memmap"), text(str(m)), text("uint8"), text("w+"),
                                   b"K\x00", b"K\x01\x85"),
    "numpy.save": lambda m: call(glob("numpy", "save"), text(str(m)), b"K\x01"),
}


def proves_real(path: Path, marker: Path) -> bool:
    """Run the file through the standard unpickler in a child process (in the file's folder,
    which is first on its import path)."""
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))", str(path)],
                   check=False, capture_output=True, timeout=60, cwd=path.parent)
    return marker.exists() or marker.with_suffix(".npy").exists()


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_is_refused_without_side_effect(tmp_path, attack):
    marker = tmp_path / "marker"
    path = payload_file(tmp_path, ATTACKS[attack](marker), protocol=4 if "STACK" in attack or "lookalike" in attack
                        else 2)
    with pytest.raises(UnsafePickleError) as info:
        safe_load(path)
    message = str(info.value)
    assert str(path) in message and "nothing in it was run" in message
    assert not marker.exists() and not marker.with_suffix(".npy").exists()
    assert proves_real(path, marker), "the payload itself must work on the standard unpickler"


def test_import_side_effects_are_never_triggered(tmp_path, monkeypatch):
    """A name in an unknown module is refused before that module is imported."""
    marker = tmp_path / "marker"
    (tmp_path / "facecap_evil_module.py").write_text(f"{marker_code(marker)}\nvalue = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = payload_file(tmp_path, glob("facecap_evil_module", "value"))
    with pytest.raises(UnsafePickleError, match="facecap_evil_module.value"):
        safe_load(path)
    assert not marker.exists() and "facecap_evil_module" not in sys.modules
    assert proves_real(path, marker)


def test_extension_registry_goes_through_the_same_check(tmp_path):
    code = 0x7F00F1
    copyreg.add_extension("os", "system", code)
    try:
        path = payload_file(tmp_path, b"\x84" + struct.pack("<i", code) + b"(" + text("true") + b"tR")
        with pytest.raises(UnsafePickleError, match="os.system"):
            safe_load(path)
    finally:
        copyreg.remove_extension("os", "system", code)


def test_admitted_callables_check_their_arguments(tmp_path):
    # numpy's _reconstruct may only build ndarrays.
    body = call(glob("numpy.core.multiarray", "_reconstruct"), glob("chumpy.ch", "Ch"), b"K\x00\x85", text("b"))
    with pytest.raises(UnsafePickleError, match="_reconstruct"):
        safe_load(payload_file(tmp_path, body))
    # copyreg._reconstructor may only build stand-ins on plain object.
    body = call(glob("copy_reg", "_reconstructor"), glob("chumpy.ch", "Ch"), glob("numpy", "dtype"), b"N")
    with pytest.raises(UnsafePickleError, match="_reconstructor"):
        safe_load(payload_file(tmp_path, body))


# -- what is admitted ----------------------------------------------------------------------
ARRAYS = {
    "float64": np.arange(12.0).reshape(3, 4),
    "float32_fortran": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
    "transposed": np.arange(24.0).reshape(2, 3, 4).transpose(2, 0, 1),
    "uint32": np.array([[4294967295, 0, 1]], dtype=np.uint32),
    "int64": np.arange(5, dtype=np.int64),
    "big_endian": np.arange(4, dtype=">f8"),
}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_arrays_and_sparse_matrices_round_trip(protocol):
    sparse = scipy.sparse.random(5, 40, density=0.2, format="csc", random_state=0)
    data = dict(ARRAYS, scalar=np.float64(2.5), csc=sparse, csr=sparse.tocsr(), coo=sparse.tocoo(), name="lbs")
    raw = pickle.dumps(data, protocol=protocol)
    loaded, reference = safe_load(io.BytesIO(raw)), pickle.loads(raw)
    for key, value in ARRAYS.items():
        assert loaded[key].dtype == reference[key].dtype and np.array_equal(loaded[key], value), key
        assert loaded[key].strides == reference[key].strides, key
    assert loaded["scalar"] == 2.5 and loaded["name"] == "lbs"
    for key in ("csc", "csr", "coo"):
        assert isinstance(loaded[key], SparseStandIn)
        assert np.array_equal(as_array(loaded[key], key), sparse.toarray())


def test_python2_chumpy_style_reads_back():
    class Ch:  # written under chumpy's names with the state chumpy pickles
        def __init__(self, x):
            self.x = x

        def __reduce_ex__(self, protocol):
            return copyreg.__newobj__, (type(self),), {"x": self.x, "_dirty_vars": {"x"}, "_itr": None}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    value = np.random.default_rng(0).normal(size=(7, 3, 4))
    buffer = io.BytesIO()
    dump_python2({"shapedirs": Ch(value), "bs_style": "lbs", "f": np.arange(6, dtype=np.uint32).reshape(2, 3)},
                 buffer)
    raw = buffer.getvalue()
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw and b"cchumpy.ch\nCh" in raw and b"c__builtin__\nset" in raw
    opcodes = {op.name for op, _, _ in pickletools.genops(raw)}
    assert "SHORT_BINSTRING" in opcodes and not opcodes & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES"}
    loaded = safe_load(io.BytesIO(raw))
    assert isinstance(loaded["shapedirs"], ChumpyStandIn)
    assert np.array_equal(as_array(loaded["shapedirs"], "shapedirs"), value)
    assert loaded["shapedirs"].state["_dirty_vars"] == {"x"}
    assert loaded["bs_style"] == "lbs" and loaded["f"].dtype == np.uint32


def test_values_that_are_not_arrays_are_named():
    stand_in = safe_load(io.BytesIO(b"\x80\x02" + glob("chumpy.ch_ops", "add") + b")\x81}b."))
    with pytest.raises(HeadModelError, match="'J' in x.pkl is a chumpy expression"):
        as_array(stand_in, "'J' in x.pkl")
    with pytest.raises(HeadModelError, match="weights is a dict; expected an array"):
        as_array({}, "weights")
    with pytest.raises(HeadModelError, match="objects"):
        as_array(np.array([None, 1]), "f")


@pytest.mark.parametrize("content", [b"", b"\x80\x02}q\x00(U\x01", b"not a pickle at all", b"\x80\x05\x95"])
def test_broken_files_name_the_file_and_the_expectation(tmp_path, content):
    path = tmp_path / "broken.pkl"
    path.write_bytes(content)
    with pytest.raises(HeadModelError) as info:
        safe_load(path, expected="a FLAME model pickle")
    assert not isinstance(info.value, UnsafePickleError)
    assert str(path) in str(info.value) and "expected a FLAME model pickle" in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(HeadModelError, match="not found"):
        safe_load(tmp_path / "absent.pkl")
    with pytest.raises(HeadModelError, match="is a folder"):
        safe_load(tmp_path)
