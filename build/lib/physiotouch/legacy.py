"""python -m physiotouch.legacy convert OLD.pth NEW.ckpt   |   python -m physiotouch.legacy info OLD.pth"""

from __future__ import annotations

import argparse
import json
import sys

from physiotouch.checkpoints.reference import load_upstream_checkpoint, save_converted
from physiotouch.cli import user_errors
from physiotouch.models import named_model_configs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m physiotouch.legacy",
                                     description="Read checkpoints of the reference PhysioTouch Stage-1 program.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="reference best.pth/last.pth -> a physiotouch .ckpt")
    conv.add_argument("old")
    conv.add_argument("new")
    conv.add_argument("--model", choices=sorted(named_model_configs()),
                      help="model size (default: inferred from the weights)")
    info = sub.add_parser("info", help="print the reference run's settings and the inferred model size")
    info.add_argument("old")
    args = parser.parse_args(argv)
    with user_errors():
        return _run(args)


def _run(args) -> int:
    cfg = named_model_configs()[args.model] if getattr(args, "model", None) else None
    ck = load_upstream_checkpoint(args.old, cfg)
    if args.command == "info":
        summary = {"epoch": ck.epoch, "loss": ck.loss, "scheme": ck.scheme,
                   **{k: ck.settings.get(k) for k in ("alpha", "beta", "mask_ratio", "norm_pix_loss", "static_ratio")},
                   "model_cfg": ck.model_cfg.to_dict()}
        print(json.dumps(summary, indent=2, default=str))
        return 0
    save_converted(ck, args.old, args.new)
    print(f"wrote {args.new} ({ck.scheme}, epoch {ck.epoch}, model "
          f"{ck.model_cfg.encoder.hidden_size}-wide x {ck.model_cfg.encoder.num_hidden_layers} layers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
