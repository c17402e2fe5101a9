"""python -m physiotouch.data synth --out DIR   |   python -m physiotouch.data check --root DIR --index CSV"""

from __future__ import annotations

import argparse
import sys
import time

from physiotouch.cli import FOUND_PROBLEMS, user_errors
from physiotouch.utils.plain import field_defaults

from .check import check_dataset
from .index import DEFAULT_LABEL_REGEX
from .synthetic import SENSORS, SynthConfig, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m physiotouch.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write the built-in synthetic data set in TacQuad layout")
    d = field_defaults(SynthConfig)  # the generator's defaults, written once (data=synthetic adds its deltas)
    synth.add_argument("--out", required=True, help="output folder (replaced if it exists)")
    synth.add_argument("--objects", type=int, default=d["num_objects"],
                       help="number of objects (12 geometries, then variants)")
    synth.add_argument("--sensors", default=",".join(d["sensors"]), help=f"comma-separated, from {','.join(SENSORS)}")
    synth.add_argument("--frames", type=int, default=d["frames"], help="frames per sequence")
    synth.add_argument("--sequences", type=int, default=d["sequences"],
                       help="contact sequences per object and sensor (1: the original layout; the built-in set "
                            "of data=synthetic uses 3 with --objects 24 --frames 16: motions in turn)")
    synth.add_argument("--width", type=int, default=d["width"])
    synth.add_argument("--height", type=int, default=d["height"])
    synth.add_argument("--seed", type=int, default=d["seed"])
    check = sub.add_parser("check", help="report every problem of an index and its frames; exit 1 if any")
    check.add_argument("--root", required=True)
    check.add_argument("--index", required=True)
    check.add_argument("--label-regex", default=DEFAULT_LABEL_REGEX)
    check.add_argument("--allow-outside-root", action="store_true",
                       help="accept index folders that resolve outside --root (data.allow_outside_root)")
    args = parser.parse_args(argv)
    with user_errors():
        return _run(args)


def _run(args) -> int:

    if args.command == "synth":
        start = time.time()
        index = generate(SynthConfig(out=args.out, num_objects=args.objects, sensors=args.sensors.split(","),
                                     frames=args.frames, width=args.width, height=args.height, seed=args.seed,
                                     sequences=args.sequences))
        print(f"wrote {index}, labels.csv and trajectory.csv ({args.objects} objects x "
              f"{len(args.sensors.split(','))} sensors x {args.sequences} sequences x {args.frames} frames) in "
              f"{time.time() - start:.1f} s")
        return 0

    problems = check_dataset(args.root, args.index, args.label_regex, allow_outside_root=args.allow_outside_root,
                             progress_bar=True)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return FOUND_PROBLEMS
    print(f"ok: {args.index} and its frames under {args.root} have no problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
