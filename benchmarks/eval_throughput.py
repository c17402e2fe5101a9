"""The evaluation's time per phase, the old path (every probe fit one at a time by scikit-learn) beside the new one
(each task's fits batched in torch), in one run, with the ratio; and whether both give the same numbers.

    .venv/bin/python benchmarks/eval_throughput.py --ckpt outputs/DATE/TIME/checkpoints/best-epochNNN.ckpt
    .venv/bin/python benchmarks/eval_throughput.py            # trains the README's main job first (~1-2 min)

Both paths run the same tuned protocol (each probe's C, α, k chosen by inner cross-validation, for the model and
every control): `python -m physiotouch.evaluate ckpt_path=CKPT eval.probe.backend=sklearn|torch`, each in its own
process, each writing its phases' seconds to `timings.json`. Prints a Markdown table (docs/performance.md holds the
last one measured) and the largest metric difference between the two paths.
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


def evaluate(ckpt: Path, out: Path, backend: str, extra: list[str]) -> tuple[dict, dict, float]:
    cmd = [sys.executable, "-m", "physiotouch.evaluate", f"ckpt_path={ckpt}", f"out_dir={out}",
           f"eval.probe.backend={backend}", "logger=none", *extra]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="the checkpoint to evaluate (default: train the main job first)")
    parser.add_argument("overrides", nargs="*", help="more overrides for both evaluations")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eval_throughput_") as tmp:
        ckpt = args.ckpt.resolve() if args.ckpt else train_default(Path(tmp))
        runs = {b: evaluate(ckpt, Path(tmp) / b, b, args.overrides) for b in ("sklearn", "torch")}
    (old, m_old, wall_old), (new, m_new, wall_new) = runs["sklearn"], runs["torch"]
    print(f"checkpoint {ckpt.name}; {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}\n")
    print("| phase | old path: scikit-learn, fit by fit (s) | new path: batched torch fits (s) | old / new |")
    print("|---|---|---|---|")
    for phase in [p for p in old if p != "total"] + ["total"]:
        ratio = old[phase] / new[phase] if new.get(phase) else float("nan")
        print(f"| {phase} | {old[phase]:.1f} | {new.get(phase, float('nan')):.1f} | {ratio:.1f}x |")
    print(f"| wall clock, process start included | {wall_old:.1f} | {wall_new:.1f} | {wall_old / wall_new:.1f}x |")
    keys = [k for k, v in m_old.items() if isinstance(v, float) and k in m_new and ("/probe_" in k or "/loso_" in k)]
    diffs = sorted(((abs(m_old[k] - m_new[k]), k) for k in keys if isinstance(m_new.get(k), float)), reverse=True)
    verdicts = [k for k, row in m_old["controls"].items()
                if row.get("better_than_all") != m_new["controls"].get(k, {}).get("better_than_all")]
    print(f"\nprobe metrics compared: {len(diffs)}; largest |old - new|: "
          + ", ".join(f"{k} {d:.4f}" for d, k in diffs[:3]))
    print(f"'beats all controls' verdicts that differ: {len(verdicts)} of {len(m_old['controls'])}"
          + (f" ({', '.join(verdicts)})" if verdicts else ""))


if __name__ == "__main__":
    main()
