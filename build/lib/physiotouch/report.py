"""python -m physiotouch.report MULTIRUN_DIR [MORE_DIRS] [--out DIR] [--main METRIC] [--secondary METRIC]

Reads every finished job under the folders and writes report.md, report.csv and plots (into the first folder,
or --out). Refuses to mix runs made on different data versions or splits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from physiotouch.cli import ConfigError, user_errors
from physiotouch.experiments.results_report import build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m physiotouch.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="multirun folders, run folders, or folders of them")
    parser.add_argument("--out", type=Path, help="where to write (default: the first folder)")
    parser.add_argument("--main", default="val/objective", help="main validation metric (default val/objective)")
    parser.add_argument("--main-mode", choices=["min", "max"], default=None,
                        help="min or max (default: max for probe metrics, else min)")
    parser.add_argument("--secondary", default="val/loss_pred", help="secondary validation metric")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="compare runs that differ in validation mask ratio, norm_pix_loss, image or model size "
                             "(said at the top of the report)")
    args = parser.parse_args(argv)
    mode = args.main_mode or ("max" if "probe" in args.main else "min")
    with user_errors():
        for metric in (args.main, args.secondary):
            if metric.startswith("test/"):
                raise ConfigError(f"--main/--secondary {metric}: the report works on validation metrics only; test "
                                  f"numbers come from the release")
        result = build_report(args.folders, args.out, args.main, mode, args.secondary,
                              "max" if "probe" in args.secondary else "min", args.allow_mixed)
    out = Path(result["out"])
    print((out / "report.md").read_text())
    print(f"wrote {out / 'report.md'}, {out / 'report.csv'} and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
