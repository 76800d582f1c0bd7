"""Command line of the benchmark: ``python -m fitter_backend.bench fit [options]``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from fitter_backend.bench.benchmark import QUICK, BenchConfig, run
from fitter_backend.bench.problems import PROBLEMS
from fitter_backend.bench.report import format_results, targets


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {value}")
    return value


def _problems(text: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in PROBLEMS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown problem(s) {', '.join(unknown) or text!r}; "
                                         f"choose from {', '.join(PROBLEMS)}")
    return keys


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m fitter_backend.bench",
                                  description="Benchmarks of the facecap fitter on synthetic ground truth.")
    commands = top.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="accuracy and speed of the fitter, against scipy and PyTorch baselines")
    defaults = BenchConfig()
    fit.add_argument("--frames", type=_count(3), help=f"frames per shot (default {defaults.frames})")
    fit.add_argument("--landmarks", type=_count(10), help=f"dense landmarks (default {defaults.landmarks})")
    fit.add_argument("--baseline-frames", type=_count(2),
                     help=f"frames of the shot prefix the baselines solve (default {defaults.baseline_frames})")
    fit.add_argument("--baseline-cap-s", type=_seconds,
                     help=f"wall-time cap of each baseline in seconds (default {defaults.baseline_cap_s:g})")
    fit.add_argument("--skip-baselines", action="store_true", help="do not run the scipy and PyTorch baselines")
    fit.add_argument("--problems", type=_problems,
                     help=f"comma-separated subset of {', '.join(PROBLEMS)} (default all)")
    fit.add_argument("--flame-identity", type=_count(1),
                     help=f"identity components of the FLAME-format model (default {defaults.flame_identity})")
    fit.add_argument("--flame-expression", type=_count(1),
                     help=f"expression components of the FLAME-format model (default {defaults.flame_expression})")
    fit.add_argument("--quick", action="store_true",
                     help="small sizes for a smoke run: " + ", ".join(f"{k}={v:g}" for k, v in QUICK.items()))
    fit.add_argument("--against-baseline", action="store_true",
                     help="also time every problem with the frozen pre-numba kernels (bench/baseline_fitter.py) "
                          "and print the speed-up")
    fit.add_argument("--repeats", type=_count(1),
                     help=f"runs of each kernel set for --against-baseline (default {defaults.baseline_repeats})")
    fit.add_argument("--seed", type=_count(0), default=0, help="seed of the synthetic shots (default 0)")
    fit.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON to PATH")
    return top


def config_from(args: argparse.Namespace) -> BenchConfig:
    """Defaults, then --quick sizes, then explicit options."""
    values = dict(QUICK) if args.quick else {}
    for field in ("frames", "landmarks", "baseline_frames", "baseline_cap_s", "problems", "flame_identity",
                  "flame_expression"):
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    if args.repeats is not None:
        values["baseline_repeats"] = args.repeats
    values.update(seed=args.seed, skip_baselines=args.skip_baselines, against_baseline=args.against_baseline)
    config = dataclasses.replace(BenchConfig(), **values)
    if config.baseline_frames > config.frames:
        raise ValueError(f"--baseline-frames ({config.baseline_frames}) must not exceed --frames ({config.frames})")
    return config


def main(argv: list[str] | None = None) -> int:
    commands = parser()
    args = commands.parse_args(argv)
    try:
        config = config_from(args)
    except ValueError as error:
        commands.error(str(error))

    def log(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    results = run(config, log)
    results["targets"] = targets(results)
    print(format_results(results), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, allow_nan=True) + "\n", encoding="utf-8")
        log(f"figures written to {args.json}")
    return 0
