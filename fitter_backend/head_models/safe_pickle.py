"""Read untrusted model pickles (FLAME) without running any code they name.

A pickle is a small program: every ``GLOBAL``/``STACK_GLOBAL``/``INST``/``EXT`` opcode
names a callable that the standard unpickler imports and then calls. Here every such name
is looked up in a fixed table and nothing is ever imported:

- numpy array and dtype reconstruction (old ``numpy.core`` and numpy 2 ``numpy._core``
  names), through wrappers that check their arguments;
- ``_codecs.encode`` as Python 3 writes bytes at protocol 2 (str, 'latin1' only), and
  ``set``/``frozenset`` (chumpy's pickled state holds a set);
- scipy sparse matrices and every ``chumpy`` class become inert stand-ins that only keep
  their pickled state (:class:`SparseStandIn`, :class:`ChumpyStandIn`);
  :func:`as_array` turns a loaded value into a plain ndarray.

Anything else is refused with :class:`UnsafePickleError` before it is called.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.sparse

from fitter_backend.errors import HeadModelError, UnsafePickleError

_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_SPARSE_MODULES = ("scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr",
                   "scipy.sparse._csr", "scipy.sparse.coo", "scipy.sparse._coo",
                   "scipy.sparse._arrays")
_SPARSE_CLASSES = ("csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array")
_MAX_DENSE_ELEMENTS = 10**8  # a sparse matrix expanded to dense: far above FLAME's 5 x 5023


class _Refused(Exception):
    """Raised inside the unpickler; :func:`safe_load` adds the file name."""


# -- inert stand-ins ---------------------------------------------------------------------
class _StandIn:
    """Keeps constructor arguments and pickled state; has no behaviour of its own."""

    pickled_name = ""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def __repr__(self) -> str:
        return f"<inert stand-in for {self.pickled_name} with keys {sorted(map(str, self.state))}>"


class ChumpyStandIn(_StandIn):
    """A chumpy object (e.g. ``chumpy.ch.Ch``); a plain ``Ch`` keeps its value in ``state['x']``."""


class SparseStandIn(_StandIn):
    """A scipy sparse matrix; :func:`as_array` rebuilds it from its checked parts."""


_stand_in_classes: dict[tuple[type, str], type] = {}


def _stand_in(base: type, module: str, name: str) -> type:
    key = (base, f"{module}.{name}")
    if key not in _stand_in_classes:
        _stand_in_classes[key] = type(name, (base,), {"pickled_name": key[1]})
    return _stand_in_classes[key]


# -- admitted callables, each checking its arguments -------------------------------------
def _reconstruct(subtype, shape, dtype_code):
    """numpy's ``_reconstruct``: an empty ndarray that BUILD fills via ``__setstate__``."""
    if subtype is not np.ndarray:
        raise _Refused(f"numpy _reconstruct asked to build {subtype!r} instead of an ndarray")
    if isinstance(dtype_code, str):  # Python 2 str read with encoding='latin1'
        dtype_code = dtype_code.encode("latin1")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _frombuffer(buffer, dtype, shape, order, axis_order=None):
    """numpy's protocol-5 array reconstruction from a buffer (never an object array)."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise _Refused("an object array from a raw buffer")
    array = np.frombuffer(buffer, dtype=dtype)
    if order == "K" and axis_order is not None:
        return array.reshape(shape, order="C").transpose(axis_order).copy(order="K")
    return array.reshape(shape, order=order).copy(order="A")


def _scalar(dtype, data=None):
    """numpy scalar reconstruction (plain numbers only)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Refused(f"a numpy scalar of dtype {dtype!r}")
    if isinstance(data, str):
        data = data.encode("latin1")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _encode(text, encoding="utf-8"):
    """``_codecs.encode`` as Python 3 uses it for bytes at protocol 2."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused("_codecs.encode with arguments other than (str, 'latin1')")
    return text.encode("latin1")


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 objects), for stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, _StandIn)) or base is not object or state is not None:
        raise _Refused(f"copyreg._reconstructor for {cls!r} based on {base!r}")
    return cls.__new__(cls)


def _admitted(module: str, name: str):
    """What a global name resolves to, or None when it is not admitted."""
    if module in _NUMPY_MULTIARRAY and name == "_reconstruct":
        return _reconstruct
    if module in _NUMPY_MULTIARRAY and name == "scalar":
        return _scalar
    if module in _NUMPY_NUMERIC and name == "_frombuffer":
        return _frombuffer
    if module == "numpy" and name == "ndarray":
        return np.ndarray
    if module == "numpy" and name == "dtype":
        return np.dtype
    if module == "_codecs" and name == "encode":
        return _encode
    if module in ("copy_reg", "copyreg") and name == "_reconstructor":
        return _reconstructor
    if module in ("__builtin__", "builtins") and name == "object":
        return object  # only ever an argument of _reconstructor; object() does nothing
    if module in ("__builtin__", "builtins") and name in ("set", "frozenset"):
        return {"set": set, "frozenset": frozenset}[name]  # chumpy's pickled state holds sets
    if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
        return _stand_in(SparseStandIn, module, name)
    if (module == "chumpy" or module.startswith("chumpy.")) and name.isidentifier():
        return _stand_in(ChumpyStandIn, module, name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        found = _admitted(module, name)
        if found is None:
            raise _Refused(f"it names '{module}.{name}', which is not a numpy/scipy array or chumpy value")
        return found


def safe_load(path_or_file: str | Path | BinaryIO, expected: str = "a pickle file") -> object:
    """Unpickle a model file, admitting only arrays and inert stand-ins (see module doc).

    Raises UnsafePickleError (naming the file and the refused global) when the pickle asks
    for anything else, and HeadModelError (naming the file and ``expected``) when the file
    is missing, truncated or no pickle. Python 2 pickles are read with
    ``encoding='latin1'``, as numpy requires.
    """
    if isinstance(path_or_file, (str, Path)):
        path = Path(path_or_file)
        try:
            with open(path, "rb") as handle:
                return _load(handle, str(path), expected)
        except FileNotFoundError:
            raise HeadModelError(f"file not found: {path} (expected {expected})") from None
        except IsADirectoryError:
            raise HeadModelError(f"{path} is a folder; expected {expected}") from None
    return _load(path_or_file, str(getattr(path_or_file, "name", "<stream>")), expected)


def _load(handle: BinaryIO, name: str, expected: str) -> object:
    try:
        return _RestrictedUnpickler(handle, encoding="latin1").load()
    except _Refused as exc:
        raise UnsafePickleError(f"refused to load {name} (expected {expected}): {exc}; nothing in it was run"
                                ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError, OverflowError, MemoryError) as exc:
        raise HeadModelError(
            f"cannot read {name}: expected {expected}, but it is truncated, damaged or not a pickle "
            f"({type(exc).__name__}: {exc})") from None


# -- values out of a loaded pickle -------------------------------------------------------
def as_array(value: object, what: str) -> np.ndarray:
    """A loaded value as a plain ndarray: arrays, leaf chumpy ``Ch`` objects, sparse matrices.

    ``what`` names the value in the HeadModelError raised for anything else.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise HeadModelError(f"{what} is an array of Python objects; expected numbers")
        return value
    if isinstance(value, ChumpyStandIn):
        if "x" not in value.state:
            raise HeadModelError(
                f"{what} is a chumpy expression ({value.pickled_name}) that can only be evaluated by "
                "running chumpy; expected an array or a plain chumpy Ch value")
        return as_array(value.state["x"], what)
    if isinstance(value, SparseStandIn):
        return _sparse_to_dense(value, what)
    if isinstance(value, (list, tuple)):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return array
    raise HeadModelError(f"{what} is a {type(value).__name__}; expected an array")


def _sparse_to_dense(value: SparseStandIn, what: str) -> np.ndarray:
    state = value.state
    shape = state.get("_shape", state.get("shape"))
    kind = value.pickled_name.rsplit(".", 1)[1][:3]
    try:
        shape = tuple(int(n) for n in shape)
        if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] > _MAX_DENSE_ELEMENTS:
            raise ValueError(f"shape {shape} is not a plausible model matrix")
        if kind == "coo":
            row, col = state["coords"] if "coords" in state else (state["row"], state["col"])
            matrix = scipy.sparse.coo_matrix((np.asarray(state["data"]), (np.asarray(row), np.asarray(col))),
                                             shape=shape)
        else:
            build = scipy.sparse.csc_matrix if kind == "csc" else scipy.sparse.csr_matrix
            matrix = build((np.asarray(state["data"]), np.asarray(state["indices"]),
                            np.asarray(state["indptr"])), shape=shape)
            matrix.check_format(full_check=True)
        return matrix.toarray()
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise HeadModelError(f"{what} is a damaged scipy sparse matrix ({exc})") from None

