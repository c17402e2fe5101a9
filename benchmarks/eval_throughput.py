"""The evaluation's time per phase, the old path (every probe fit one at a time by scikit-learn, in one process)
beside the new one (each task's fits batched in torch), without and with its probe-fitting process, first with an
empty probe cache and then with the controls' probes read back from it (as every evaluation after the first on the
same data), in one run, with the ratios; and whether all of them give the same numbers.

    .venv/bin/python benchmarks/eval_throughput.py --ckpt outputs/DATE/TIME/checkpoints/best-epochNNN.ckpt
    .venv/bin/python benchmarks/eval_throughput.py            # trains the README's main job first (~1-2 min)

Every path runs the same tuned protocol (each probe's C, α, k chosen by inner cross-validation, for the model and
every control): `python -m physiotouch.evaluate ckpt_path=CKPT eval.probe.backend=sklearn|torch
eval.fit_process=off|auto`, each in its own process, each writing its phases' seconds to `timings.json`; the old
path without the probe cache, the new ones each with a cache folder of their own, empty at first. Prints a Markdown
table (docs/performance.md holds the last one measured) and the largest metric difference between the paths.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 30.0  # issue 24: the default evaluation of the default run, on 2 cores


def evaluate(ckpt: Path, out: Path, backend: str, cache: Path | None, extra: list[str]) -> tuple[dict, dict, float]:
    cached = [f"eval.probe_cache_dir={cache}"] if cache else ["eval.probe_cache=false"]
    cmd = [sys.executable, "-m", "physiotouch.evaluate", f"ckpt_path={ckpt}", f"out_dir={out}",
           f"eval.probe.backend={backend}", "logger=none", *cached, *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"evaluation failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return (json.loads((out / "timings.json").read_text()), json.loads((out / "metrics.json").read_text()), wall)


def train_default(tmp: Path) -> Path:
    run = tmp / "run"
    subprocess.run([sys.executable, "-m", "physiotouch.train", f"hydra.run.dir={run}", "extras.print_config=false",
                    "evaluate_after_training=false"], cwd=REPO, check=True, capture_output=True)
    return next((run / "checkpoints").glob("best-*.ckpt"))


COLUMNS = {  # name: (heading, backend, the probe-fitting process, cache: none, empty at first, filled by "new")
    "old": ("old path: scikit-learn, fit by fit, one process (s)", "sklearn", "off", None),
    "one": ("new path: batched torch fits, one process (s)", "torch", "off", "empty"),
    "new": ("new path, with its probe-fitting process (s)", "torch", "auto", "empty"),
    "cached": ("new path, controls from the cache (s)", "torch", "auto", "new"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="the checkpoint to evaluate (default: train the main job first)")
    parser.add_argument("--skip-old", action="store_true",
                        help="leave the old path out (half an hour here): the new paths and the cached one only")
    parser.add_argument("overrides", nargs="*", help="more overrides for every evaluation")
    args = parser.parse_args()
    runs = {}  # name: (timings, metrics, wall clock)
    with tempfile.TemporaryDirectory(prefix="eval_throughput_") as tmp:
        ckpt = args.ckpt.resolve() if args.ckpt else train_default(Path(tmp))
        for name, (_, backend, process, cache) in COLUMNS.items():
            if name == "old" and args.skip_old:
                continue
            folder = None if cache is None else Path(tmp) / f"probe_cache_{'new' if cache == 'new' else name}"
            runs[name] = evaluate(ckpt, Path(tmp) / name, backend, folder,
                                  [f"eval.fit_process={process}", *args.overrides])
    print(f"checkpoint {ckpt.name}; {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}\n")
    print_table(runs)
    for a, b in (("old", "new"), ("one", "new"), ("new", "cached")):
        if a in runs:
            compare(f"{a} / {b}", runs[a][1], runs[b][1])


def print_table(runs: dict) -> None:
    """The phases' seconds side by side (Markdown), with the ratios; without the old path when it was left out."""
    ratios = [("old", "new"), ("old", "cached")] if "old" in runs else [("new", "cached")]
    ratios.append(("one", "new"))
    print("| phase | " + " | ".join(COLUMNS[name][0] for name in runs) + " | "
          + " | ".join(f"{a} / {b}" for a, b in ratios) + " |")
    print("|---" * (1 + len(runs) + len(ratios)) + "|")
    nan = float("nan")
    first = next(iter(runs.values()))[0]
    for phase in [p for p in first if p != "total"] + ["total"]:
        cells = [f"{t.get(phase, nan):.1f}" for t, _, _ in runs.values()]
        cells += [_ratio(runs[a][0].get(phase, nan), runs[b][0].get(phase, nan)) for a, b in ratios]
        print(f"| {phase} | " + " | ".join(cells) + " |")
    print("| wall clock, process start included | " + " | ".join(f"{w:.1f}" for _, _, w in runs.values())
          + " | " + " | ".join(_ratio(runs[a][2], runs[b][2]) for a, b in ratios) + " |")
    print(f"\nbudget (issue 24: {BUDGET_S:.0f} s on 2 cores; `total`, the evaluation's own wall clock): every "
          f"evaluation after the first on a split {_against_budget(runs['cached'][0]['total'])}; the first, which "
          f"fits the controls' probes for that split, {_against_budget(runs['new'][0]['total'])}")


def _against_budget(seconds: float) -> str:
    return f"{seconds:.1f} s ({'within' if seconds <= BUDGET_S else 'over'})"


def _ratio(a: float, b: float) -> str:
    """a / b; "—" where b is missing or under the table's 0.1 s (a control read from the cache: no ratio means much)"""
    return f"{a / b:.1f}x" if b >= 0.05 and a == a else "—"


def compare(what: str, a: dict, b: dict) -> None:
    keys = [k for k, v in a.items() if isinstance(v, float) and k in b and ("/probe_" in k or "/loso_" in k)]
    diffs = sorted(((abs(a[k] - b[k]), k) for k in keys if isinstance(b.get(k), float)), reverse=True)
    verdicts = [k for k, row in a["controls"].items()
                if row.get("better_than_all") != b["controls"].get(k, {}).get("better_than_all")]
    print(f"\n{what}: probe metrics compared: {len(diffs)}; largest difference: "
          + ", ".join(f"{k} {d:.4f}" for d, k in diffs[:3]))
    print(f"{what}: 'beats all controls' verdicts that differ: {len(verdicts)} of {len(a['controls'])}"
          + (f" ({', '.join(verdicts)})" if verdicts else ""))


if __name__ == "__main__":
    main()
