"""python -m physiotouch.finalize CHECKPOINT_OR_RUN_DIR [--out DIR] [--force] [--tag NAME]

Evaluates the test split once for the checkpoint chosen by validation (a run folder: its best checkpoint), writes
a release folder (weights as .ckpt and safetensors, resolved config, splits, run info, validation report, test
metrics, environment, commands, SHA256SUMS), fills the "Final settings and results" blocks of Task.md and
README.md from those files, and with --tag commits those blocks and tags the (otherwise clean) tree.
A second finalize on the same test split is refused unless --force, which is then recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from physiotouch.cli import user_errors
from physiotouch.paths import REPO_DIR
from physiotouch.release.bundle import finalize
from physiotouch.release.docs_block import replace_block, results_block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m physiotouch.finalize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, nargs="?", help="a training run folder or a checkpoint inside one")
    parser.add_argument("--docs-from", type=Path, metavar="RELEASE_DIR",
                        help="only re-render the README/Task.md blocks from an existing release folder (no evaluation)")
    parser.add_argument("--out", type=Path, help="release folder (default: releases/<name> beside outputs/)")
    parser.add_argument("--force", action="store_true", help="evaluate a test split that was evaluated before")
    parser.add_argument("--tag", help="commit the generated README/Task.md blocks and create this git tag")
    parser.add_argument("--docs-root", type=Path, default=REPO_DIR, help="where README.md and Task.md live")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--replicates", type=Path, nargs="+", metavar="SWEEP_DIR",
                        help="sweep folders holding this configuration's runs over folds x seeds (mean ± std in the "
                             "release)")
    args = parser.parse_args(argv)
    if args.docs_from:
        with user_errors():
            block = results_block(args.docs_from)
        for doc in ("README.md", "Task.md"):
            if (args.docs_root / doc).is_file():
                replace_block(args.docs_root / doc, block)
        print(f"re-rendered the final-results blocks from {args.docs_from}")
        return 0
    if args.target is None:
        parser.error("give a run folder or checkpoint (or --docs-from RELEASE_DIR)")
    with user_errors():
        out = finalize(args.target, args.out, args.force, args.tag, args.docs_root, args.batch_size,
                       replicates=args.replicates)
    print(f"release written to {out}\n{(out / 'test_metrics.json').read_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
