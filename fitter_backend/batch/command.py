"""``python -m fitter_backend batch SHOTS --out DIR``: the command's arguments and its run.
Imports nothing heavy (the CLI builds every parser at start-up)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: Exit statuses: 0 every shot ok or skipped, 1 some shot failed, 2 bad input, 130 Ctrl-C.
EXIT_FAILED, EXIT_CANCELLED = 1, 130


def add_batch_command(commands: argparse._SubParsersAction) -> None:
    """Register ``batch`` on the CLI's sub-commands."""
    batch = commands.add_parser(
        "batch", help="fit many shots on Ray (a local runtime, or a cluster with --ray-address)",
        description="Fit every shot of a JSON or TOML shot list (docs/batch.md) into DIR/<shot>, the same "
                    "atomic result folders as 'fit'. Shots whose result is complete and whose inputs and "
                    "options are unchanged are skipped. Exit status: 0 all ok or skipped, 1 a shot failed, "
                    "2 bad input, 130 cancelled.")
    batch.add_argument("shots", help="shot list (.json or .toml)")
    batch.add_argument("--out", required=True, help="folder for the shots' result folders and batch-manifest.json")
    batch.add_argument("--ray-address", help="an existing Ray cluster (e.g. 127.0.0.1:6379; default: start a "
                                             "local runtime for this run)")
    batch.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="local runtime: shots fitted at once (default: the CPU count)")
    batch.add_argument("--retries", type=int, default=1, help="times a shot is retried when its worker dies")
    batch.add_argument("--progress", default="bar", choices=("bar", "json"),
                       help="bar: terminal status lines and a summary table; json: JSON lines on stdout")
    batch.set_defaults(run=run_batch_command)


def run_batch_command(args: argparse.Namespace) -> int:
    if args.ray_address and "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").is_file():
        # A cluster from `ray start --head` wants the token it saved in ~/.ray/auth_token (Ray 2.60
        # enables token authentication by default); a driver offers it only in token mode, which
        # Ray reads when it is imported.
        os.environ["RAY_AUTH_MODE"] = "token"
    from fitter_backend.batch.driver import BatchCancelled, run_batch
    from fitter_backend.batch.progress import BatchProgress
    from fitter_backend.batch.shots import load_shots
    from fitter_backend.errors import FacecapError

    if args.workers < 1 or args.retries < 0:
        raise FacecapError(f"--workers {args.workers} / --retries {args.retries}: expected workers >= 1, retries >= 0")
    shots = load_shots(Path(args.shots))
    stream = None
    if args.progress == "json":
        # Ray prints its own notices (a worker died, ...) to stdout; tools read stdout as JSON
        # lines, so those go to stderr and only the progress records keep the real stdout.
        sys.stdout.flush()
        stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    progress = BatchProgress(args.progress, [shot.name for shot in shots], stream=stream)
    try:
        outcomes = run_batch(shots, Path(args.out), progress, address=args.ray_address, workers=args.workers,
                             retries=args.retries)
    except BatchCancelled:
        progress.summary([progress.finished[s.name] for s in shots if s.name in progress.finished])
        return EXIT_CANCELLED
    progress.summary(outcomes)
    return EXIT_FAILED if any(o.status == "failed" for o in outcomes) else 0
