"""The benchmark's printed tables and its targets (issue 3) judged on the figures.

Speed targets are judged on CPU time (one core; the wall time of a shared machine also
counts other processes' work) and on the monocular problems, which the targets describe;
accuracy targets on every problem's joint fit.
"""
from __future__ import annotations

import math

from fitter_backend.bench.baselines import SCIPY_TRF, TORCH_LBFGS

JOINT_MS_PER_FRAME = 10.0
REALTIME_MS_PER_FRAME = 3.0        # with up to REALTIME_LANDMARKS landmarks (the paper's 320) ...
REALTIME_LANDMARKS = 320
REALTIME_MS_PER_FRAME_DENSE = 5.0  # ... and with more (issue 17: 700)
IDENTITY_MM = 1.0
FOCAL_PCT = 5.0
SPEEDUP = 10.0
#: "Equal energy": ours may end at most this much (relative) above a baseline's best.
EQUAL_ENERGY_TOLERANCE = 1e-4

_ROWS = (
    ("vertex error median (mm)", "vertex_median_mm", "{:.3f}"),
    ("vertex error p90 (mm)", "vertex_p90_mm", "{:.3f}"),
    ("unaligned median (mm)", "unaligned_median_mm", "{:.3f}"),
    ("identity error median (mm)", "identity_median_mm", "{:.3f}"),
    ("focal error (%)", "focal_error_pct", "{:.2f}"),
    ("jitter (mm/frame^2)", "jitter_mm", "{:.4f}"),
    ("jitter of the error (mm/frame^2)", "jitter_error_mm", "{:.4f}"),
    ("ms per frame, CPU", "ms_per_frame_cpu", "{:.1f}"),
    ("ms per frame, wall", "ms_per_frame_wall", "{:.1f}"),
    ("  tracking only, CPU", "tracking_ms_per_frame_cpu", "{:.2f}"),
    ("  tracking only, wall", "tracking_ms_per_frame_wall", "{:.2f}"),
    ("energy", "energy", "{:.6g}"),
)


def _cell(figures: dict | None, key: str, fmt: str) -> str:
    if figures is None or figures.get(key) is None:
        return "-"
    value = figures[key]
    return fmt.format(value) if isinstance(value, (int, float)) and math.isfinite(value) else str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned first column, right-aligned numbers."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_problem(p: dict) -> str:
    m = p["model"]
    views = "monocular" if p["cameras"] == 1 else (
        f"{p['cameras']} cameras, extrinsics {'known' if p['extrinsics_known'] else 'unknown'}")
    lines = [f"== {p['title']} ==",
             f"{p['frames']} frames, {p['landmarks']} landmarks, {views}, focal unknown; model {m['name']}: "
             f"{m['vertices']} vertices ({m['face_vertices']} in the face region), {m['identity']} identity, "
             f"{m['expression']} expression components, {m['joints']} joints"]
    columns = [("joint fit", p["joint"]), ("no E_temporal", p["no_temporal"]), ("real-time", p["realtime"])]
    rows = [[label] + [_cell(f, key, fmt) for _, f in columns] for label, key, fmt in _ROWS]
    rows.insert(6, ["true jitter (mm/frame^2)", f"{p['truth_jitter_mm']:.4f}", "", ""])
    rows.append(["energy at the truth", f"{p['truth_energy']:.6g}", "", ""])
    lines += _table(["", *[name for name, _ in columns]], rows)
    if p["realtime"] is None:
        lines.append("real-time mode: not available")
    return "\n".join(lines)


def format_baselines(b: dict) -> str:
    lines = [f"== same problem, three solvers: {b['title']}, first {b['frames']} frames ==",
             f"all minimise the same energy (E_intersect included) from the same start (energy "
             f"{b['start_energy']:.6g}); baselines capped at {b['cap_s']:g} s wall"]
    header = ["solver", "energy", "median mm", "identity mm", "focal %", "CPU s", "wall s",
              "to our energy CPU s", "ratio CPU", "ratio wall"]
    rows = []
    for name, s in b["solvers"].items():
        row = [name, f"{s['energy']:.6g}", f"{s['vertex_median_mm']:.3f}", f"{s['identity_median_mm']:.3f}",
               f"{s['focal_error_pct']:.2f}", f"{s['cpu_s']:.2f}", f"{s['wall_s']:.2f}"]
        if name == "ours":
            row += ["", "1", "1"]
        else:
            bound = ">" if s["ratio_is_lower_bound"] else ""
            reached = "" if s["reached_our_energy"] else " (never)"
            row += [f"{s['time_to_our_energy_cpu_s']:.2f}{reached}", f"{bound}{s['speed_ratio_cpu']:.1f}",
                    f"{bound}{s['speed_ratio_wall']:.1f}"]
        rows.append(row)
    lines += _table(header, rows)
    for name, s in b["solvers"].items():
        if name != "ours":
            lines.append(f"{name}: {s['evaluations']} energy evaluations; {s['message']}")
    if "torch_missing" in b:
        lines.append(f"{TORCH_LBFGS}: not run: {b['torch_missing']}")
    lines.append(f"ratio = baseline time to come within {b['energy_tolerance']:g} (relative) of our final energy / "
                 "our time (its whole run when it never does; '>' when the cap stopped it)")
    return "\n".join(lines)


def format_against_baseline(rows: list[dict]) -> str:
    lines = ["== speed against the frozen pre-numba kernels (same process, alternating; fastest of "
             f"{rows[0]['repeats']} runs each) =="]
    header = ["problem", "mode", "before ms/frame", "after ms/frame", "speed-up", "median mm before/after",
              "energy before/after"]
    body = []
    for r in rows:
        for mode, label in (("joint", "joint fit"), ("realtime", "real-time tracking")):
            m = r[mode]
            b, c = m["baseline"], m["current"]
            body.append([r["title"], label, f"{b['ms_per_frame_cpu']:.2f}", f"{c['ms_per_frame_cpu']:.2f}",
                         f"{m['speedup_cpu']:.2f}x", f"{b['vertex_median_mm']:.3f} / {c['vertex_median_mm']:.3f}",
                         f"{b['energy']:.6g} / {c['energy']:.6g}"])
    lines += _table(header, body)
    lines.append("CPU ms per frame; real-time figures are per tracked frame (calibration excluded)")
    return "\n".join(lines)


def targets(results: dict) -> list[dict]:
    """Each target with the measured figure and whether it is met."""
    out = []

    def add(target: str, where: str, measured: str, passed: bool) -> None:
        out.append({"target": target, "problem": where, "measured": measured, "passed": bool(passed)})

    # The solvers minimise one energy, so a solver's accuracy is the energy it ends at. The
    # error against the synthetic truth is printed beside it but not judged: the energy's
    # minimum is not the truth, and a baseline that stops short of it can stop nearer the
    # truth by chance (stop 31: scipy 0.304 mm at energy 21764, the minimum 0.397 mm at 21592).
    for b in results["baselines"]:
        ours = b["solvers"]["ours"]
        for name in (SCIPY_TRF, TORCH_LBFGS):
            target = f">= {SPEEDUP:g}x faster than {name} on the same energy, ending at equal or lower energy"
            s = b["solvers"].get(name)
            if s is None:
                add(target, b["title"], "not run", False)
                continue
            equal_energy = ours["energy"] <= (1 + EQUAL_ENERGY_TOLERANCE) * s["energy"]
            add(target, f"{b['title']}, {b['frames']} frames",
                f"{'>' if s['ratio_is_lower_bound'] else ''}{s['speed_ratio_cpu']:.1f}x CPU time; energy "
                f"{ours['energy']:.6g} (ours) vs {s['energy']:.6g}; median {ours['vertex_median_mm']:.3f} mm vs "
                f"{s['vertex_median_mm']:.3f} mm from the truth",
                s["speed_ratio_cpu"] >= SPEEDUP and equal_energy)
    for p in results["problems"]:
        j, rt = p["joint"], p["realtime"]
        if p["cameras"] == 1:
            add(f"joint fit <= {JOINT_MS_PER_FRAME:g} ms per frame (one core)", p["title"],
                f"{j['ms_per_frame_cpu']:.1f} ms CPU ({j['ms_per_frame_wall']:.1f} ms wall)",
                j["ms_per_frame_cpu"] <= JOINT_MS_PER_FRAME)
            limit = REALTIME_MS_PER_FRAME if p["landmarks"] <= REALTIME_LANDMARKS else REALTIME_MS_PER_FRAME_DENSE
            target = f"real-time mode <= {limit:g} ms per frame with {p['landmarks']} landmarks"
            if rt is None:
                add(target, p["title"], "not available", False)
            else:
                per_frame = rt.get("tracking_ms_per_frame_cpu", rt["ms_per_frame_cpu"])
                add(target, p["title"],
                    f"{per_frame:.2f} ms CPU per tracked frame ({rt['ms_per_frame_cpu']:.1f} ms with calibration)",
                    per_frame <= limit)
        add(f"identity median error < {IDENTITY_MM:g} mm", p["title"], f"{j['identity_median_mm']:.3f} mm",
            j["identity_median_mm"] < IDENTITY_MM)
        add(f"focal within {FOCAL_PCT:g}%", p["title"], f"{j['focal_error_pct']:.2f}%",
            j["focal_error_pct"] <= FOCAL_PCT)
    return out


def format_targets(rows: list[dict]) -> str:
    lines = ["== targets (speed: CPU time of one core) =="]
    for r in rows:
        lines.append(f"{'PASS' if r['passed'] else 'MISS'}  {r['target']}: {r['measured']}  [{r['problem']}]")
    return "\n".join(lines)


def format_results(results: dict) -> str:
    env = results["environment"]
    load = env.get("load_average")
    parts = [f"facecap fitting benchmark: Python {env['python']}, numpy {env['numpy']}, scipy {env['scipy']}"
             + (f", torch {env['torch']}" if "torch" in env else "")
             + f", OPENBLAS_NUM_THREADS={env['OPENBLAS_NUM_THREADS']}, {env['cpu_count']} CPUs"
             + (f", load average {load[0]:.1f}" if load else "")]
    parts += [format_problem(p) for p in results["problems"]]
    parts += [format_baselines(b) for b in results["baselines"]]
    if results.get("against_baseline"):
        parts.append(format_against_baseline(results["against_baseline"]))
    parts.append(f"first derivative evaluation and real-time run in this process (numba compile or cache load): "
                 f"{results['kernels_first_call_s']:.2f} s CPU")
    parts.append(format_targets(results["targets"]))
    return "\n\n".join(parts)
