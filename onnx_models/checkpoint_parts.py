"""Training checkpoints as parts that fit the GPU machine's transfer limits, and back.

The device tool returns at most 8 files of 16 MiB from one command (and carries 64 MiB in), while
a ResNet-101 checkpoint is ~170 MB of fp32 weights plus twice that of AdamW moments. ``split``
writes a checkpoint as ``part000.bin ...`` (raw little-endian tensor bytes end to end, cut into
parts of at most ``part_mib``) and a ``manifest.json`` (config, history, epoch, step, schedule, and where every
tensor lies); commands fetch 8 parts at a time. ``join`` checks every part's size and SHA-256
and writes a ``torch.save`` checkpoint that ``train --resume`` (optimiser included) or
``--init-from`` (weights only) continues from.

No pickle is involved, so parts from elsewhere cannot run code: the manifest is JSON, tensors
are raw bytes of whitelisted dtypes, and part names must be plain ``partNNN.bin`` in the folder.
Model weights may be stored as float16 (half the transfer; the round trip error is measured by
``tests/test_onnx_models.py``); optimiser moments always stay float32 (their squares underflow
in float16).

    python -m onnx_models.checkpoint_parts split last.pt parts/ [--dtype float16] [--optimiser]
    python -m onnx_models.checkpoint_parts join parts/ last.pt
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

from fitter_backend.errors import FacecapError

FORMAT = "facecap-checkpoint-parts"
VERSION = 1
PART_MIB = 15.5   # under the device tool's 16 MiB per file
#: Stored dtype -> (little-endian numpy dtype, torch dtype).
DTYPES = {"float32": ("<f4", torch.float32), "float16": ("<f2", torch.float16), "int64": ("<i8", torch.int64)}
PART_NAME = re.compile(r"part\d{3}\.bin")


def _flatten(state: dict, keep_optimiser: bool) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint by a dotted name: ``model.<param>``, ``optimiser.<id>.<key>``."""
    tensors = {f"model.{name}": value for name, value in state["model"].items()}
    if keep_optimiser and "optimiser" in state:
        for param_id, moments in state["optimiser"]["state"].items():
            for key, value in moments.items():
                tensors[f"optimiser.{param_id}.{key}"] = torch.as_tensor(value)
    return tensors


def split_checkpoint(checkpoint: Path, folder: Path, dtype: str = "float32", keep_optimiser: bool = False,
                     part_mib: float = PART_MIB) -> list[Path]:
    """Write ``checkpoint`` as parts and a manifest into ``folder``; returns the part paths.
    ``dtype``: how floating-point model weights are stored ("float32" or "float16")."""
    if dtype not in ("float32", "float16"):
        raise FacecapError(f"checkpoint parts store weights as float32 or float16, not {dtype!r}")
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part*.bin"):
        old.unlink()
    entries, stream = [], bytearray()
    for name, tensor in _flatten(state, keep_optimiser).items():
        stored = dtype if tensor.is_floating_point() and name.startswith("model.") else (
            "float32" if tensor.is_floating_point() else "int64")
        raw = tensor.detach().to(DTYPES[stored][1]).contiguous().numpy().astype(DTYPES[stored][0]).tobytes()
        entries.append({"name": name, "shape": list(tensor.shape), "dtype": stored, "offset": len(stream),
                        "bytes": len(raw)})
        stream += raw
    limit = int(part_mib * 2 ** 20)
    parts = []
    for start in range(0, len(stream), limit):   # a tensor may span parts
        blob = bytes(stream[start:start + limit])
        path = folder / f"part{len(parts):03d}.bin"
        path.write_bytes(blob)
        parts.append({"file": path.name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()})
    optimiser = state.get("optimiser") if keep_optimiser else None
    manifest = {
        "format": FORMAT, "version": VERSION, "source": checkpoint.name,
        **{key: state[key] for key in ("config", "history", "epoch", "step", "best_nme") if key in state},
        "optimiser_groups": optimiser["param_groups"] if optimiser else None,
        "scheduler": state.get("scheduler") if keep_optimiser else None,
        "tensors": entries, "parts": parts}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, default=float))
    return [folder / p["file"] for p in parts]


def _read_parts(folder: Path, manifest: dict) -> bytes:
    """The parts' bytes end to end, each checked against the manifest."""
    blobs = []
    for part in manifest["parts"]:
        name = str(part.get("file", ""))
        if not PART_NAME.fullmatch(name):
            raise FacecapError(f"{folder / 'manifest.json'}: part name {name!r} is not partNNN.bin")
        path = folder / name
        if not path.is_file():
            raise FacecapError(f"checkpoint part {path} is missing (fetch all {len(manifest['parts'])} parts)")
        blob = path.read_bytes()
        if len(blob) != part["bytes"] or hashlib.sha256(blob).hexdigest() != part["sha256"]:
            raise FacecapError(f"checkpoint part {path} is damaged or incomplete (size or SHA-256 differs "
                               "from the manifest)")
        blobs.append(blob)
    return b"".join(blobs)


def join_checkpoint(folder: Path, out: Path) -> Path:
    """Rebuild the checkpoint written by :func:`split_checkpoint` (weights as float32) at ``out``."""
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise FacecapError(f"cannot read {manifest_path}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise FacecapError(f"{manifest_path} is not a {FORMAT} manifest of version {VERSION}")
    try:
        state = _rebuild(folder, manifest, manifest_path)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise FacecapError(f"{manifest_path} is malformed ({type(error).__name__}: {error})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(state, partial)
    partial.replace(out)
    return out


def _rebuild(folder: Path, manifest: dict, manifest_path: Path) -> dict:
    """The checkpoint's state dict from a checked manifest and its parts."""
    stream = _read_parts(folder, manifest)
    model, moments = {}, {}
    for entry in manifest["tensors"]:
        if entry["dtype"] not in DTYPES:
            raise FacecapError(f"{manifest_path}: tensor {entry['name']} has dtype {entry['dtype']!r}; "
                               f"expected one of {sorted(DTYPES)}")
        if entry["offset"] < 0:
            raise FacecapError(f"{manifest_path}: tensor {entry['name']} has a negative offset")
        array = np.frombuffer(stream[entry["offset"]:entry["offset"] + entry["bytes"]], dtype=DTYPES[entry["dtype"]][0])
        if array.size != int(np.prod(entry["shape"])):
            raise FacecapError(f"{manifest_path}: tensor {entry['name']} does not fill its shape {entry['shape']}")
        tensor = torch.from_numpy(array.astype(array.dtype.newbyteorder("="))).reshape(entry["shape"])
        kind, _, rest = entry["name"].partition(".")
        if kind == "model":
            model[rest] = tensor.float() if tensor.is_floating_point() else tensor
        else:
            param_id, _, key = rest.partition(".")
            moments.setdefault(int(param_id), {})[key] = tensor
    state = {key: manifest[key] for key in ("config", "history", "epoch", "step", "best_nme") if key in manifest}
    state["model"] = model
    if manifest.get("optimiser_groups") is not None:
        state["optimiser"] = {"state": moments, "param_groups": manifest["optimiser_groups"]}
        state["scheduler"] = manifest["scheduler"]
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnx_models.checkpoint_parts", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    split = commands.add_parser("split", help="checkpoint -> parts + manifest.json")
    split.add_argument("checkpoint", type=Path)
    split.add_argument("folder", type=Path)
    split.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="model weights")
    split.add_argument("--optimiser", action="store_true", help="keep AdamW moments and the schedule (--resume)")
    split.add_argument("--part-mib", type=float, default=PART_MIB)
    join = commands.add_parser("join", help="parts + manifest.json -> checkpoint")
    join.add_argument("folder", type=Path)
    join.add_argument("checkpoint", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "split":
            parts = split_checkpoint(args.checkpoint, args.folder, args.dtype, args.optimiser, args.part_mib)
            print(f"{len(parts)} parts in {args.folder} ({-(-len(parts) // 8)} device commands of 8 files)")
        else:
            print(join_checkpoint(args.folder, args.checkpoint))
    except FacecapError as error:
        parser.exit(2, f"error: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
