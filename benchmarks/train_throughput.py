"""The full training step, measured: clips/s, FLOPs per clip (counted), peak memory and MFU, variants side by side.

One step = what `PretrainModule.training_step` does for the joint schemes: batched augmentation and normalisation
on the device, masking noise, the video forward pass, α·static + β·dynamic, backward, AdamW step. Variants, each
timed in this one run on the same model size, batch and device, printed as ratios to the first:
  eager      fp32, scaled_dot_product_attention, AdamW (fused on a GPU)        - the package's default step
  compile    the forward pass through torch.compile (model.compile=true)
  bf16       autocast bf16-mixed (the package's default on a GPU)
  bf16-compile  both: bf16-mixed with the forward pass compiled
  plain-attn softmax(QK^T/sqrt(d))V in plain ops instead of SDPA
  reference  the reference's step: fp16 autocast with a GradScaler, unfused AdamW, and each clip decoded from
             4 PNGs with per-sample augmentation in the loop (its Dataset), as `upstream_stage1.md` describes
FLOPs are counted with torch.utils.flop_counter.FlopCounterMode over one forward+backward (matmuls, convolutions,
attention; elementwise work is not counted). MFU = counted FLOP/s over the device's dense peak for that precision
(table below; on a CPU only FLOP/s is printed). Memory: peak allocated per variant on CUDA, the process's peak RSS
on a CPU.

    python benchmarks/train_throughput.py                       # tiny model, joint balanced, device present
    python benchmarks/train_throughput.py --model vit_l14 --batch-size 64 --variants bf16,bf16-compile,reference
    python benchmarks/train_throughput.py --model vit_l14 --flops-only   # count on PyTorch's meta device, no compute
    python benchmarks/train_throughput.py --override model.encoder.num_hidden_layers=4 --override loss=equal
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from physiotouch.data.augment import augment_clips, normalize, to_float_clips
from physiotouch.data.settings import AugmentConfig
from physiotouch.hydra_setup import compose_config
from physiotouch.models import build_model
from physiotouch.models.transformer import attention_kernel
from physiotouch.training.balancing import build_balancer
from physiotouch.training.optim import build_optimizer
from physiotouch.training.schemes import build_scheme
from physiotouch.training.settings import LossConfig, OptimConfig
from physiotouch.utils.plain import to_plain

# Dense peaks in FLOP/s (vendor data sheets, SXM parts): (bf16/fp16 tensor cores, tf32 tensor cores).
DEVICE_PEAKS = {"H200": (989e12, 494e12), "H100": (989e12, 494e12), "A100": (312e12, 156e12),
                "L40S": (362e12, 183e12), "A10": (125e12, 62.5e12), "RTX 4090": (165e12, 82.6e12)}


def device_peak(device: torch.device, low_precision: bool) -> tuple[str, float | None]:
    if device.type != "cuda":
        import os
        import platform

        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), None) if Path("/proc/cpuinfo").is_file() else None
        return f"{cpu or platform.machine()} ({torch.get_num_threads()} threads, {os.cpu_count()} cores)", None
    name = torch.cuda.get_device_name(device)
    for key, (half, tf32) in DEVICE_PEAKS.items():
        if key in name:
            return name, half if low_precision else tf32
    return name, None


def setup(args, device: torch.device):
    cfg = compose_config([f"model={args.model}", f"loss={args.scheme}", *args.override, "paths.output_dir=/tmp/x"])
    model_cfg = to_plain(cfg.model)
    model_cfg["encoder"]["init"] = "random"
    loss = LossConfig(**to_plain(cfg.loss))
    return cfg, model_cfg, loss


def make_model(model_cfg: dict, loss: LossConfig, device: torch.device):
    torch.manual_seed(0)
    model = build_model(**model_cfg).to(device)
    for module in model.unused_modules(build_scheme(loss, build_balancer(loss), model).paths):  # as PretrainModule
        module.requires_grad_(False)
    return model


def make_step(model, loss: LossConfig, augment: AugmentConfig, device: torch.device, *, compiled=False,
              autocast_dtype=None, scaler=None, fused=None):
    optimizer = build_optimizer(model, OptimConfig(), 1e-4, fused=fused)
    compile_ = torch.compile if compiled else (lambda fn: fn)
    passes = {"video": compile_(model.forward_video), "image": compile_(model.forward_image)}
    scheme = build_scheme(loss, build_balancer(loss).to(device), model)  # the training step's own loss

    def step(batch: torch.Tensor, gen: torch.Generator, already_float: bool = False) -> torch.Tensor:
        clips = batch if already_float else normalize(augment_clips(to_float_clips(batch), augment, gen))
        noise = torch.rand(clips.shape[0], model.num_patches, device=device, generator=gen)
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with ctx:
            total = scheme.step(passes, clips, noise, gen).total
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            total.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total.detach()

    return step


def count_flops(model_cfg: dict, loss: LossConfig, batch: int, device: torch.device) -> float:
    """FLOPs of one forward+backward per clip, counted on the meta device (shapes only: nothing is computed)."""
    meta = torch.device("meta")
    with torch.device(meta):
        model = make_model(model_cfg, loss, meta)
    size = model.cfg.encoder.image_size
    clips = torch.randn(batch, 4, 3, size, size, device=meta)
    noise = torch.rand(batch, model.num_patches, device=meta)
    with FlopCounterMode(display=False) as counter:
        out = model.forward_video(clips, noise)
        (loss.alpha * out["loss_static"] + loss.beta * out["loss_dynamic"]).backward()
    return counter.get_total_flops() / batch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, batches, device: torch.device, steps: int, warmup: int) -> tuple[float, float | None]:
    """-> (seconds per step after warm-up, peak memory in bytes on CUDA)."""
    gen = torch.Generator(device=device).manual_seed(0)
    for i in range(warmup):
        step(batches(i), gen)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(steps):
        step(batches(warmup + i), gen)
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return (time.perf_counter() - start) / steps, peak


def reference_batches(model_cfg: dict, batch: int, device: torch.device, tmp: Path):
    """Clips decoded from PNG files on every step, augmented one by one in the loop (the reference's Dataset)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from data_throughput import ReferenceStyleDataset  # the reference-style Dataset, shared with that benchmark

    from physiotouch.data.datamodule import make_windows
    from physiotouch.data.index import read_index
    from physiotouch.data.synthetic import SynthConfig, generate

    size = model_cfg["encoder"]["image_size"]
    generate(SynthConfig(out=str(tmp / "png"), num_objects=2, sensors=["gelsight"], frames=batch + 3, width=320,
                         height=240))
    sequences, _ = read_index(tmp / "png" / "index.csv")
    windows, _ = make_windows(sequences)
    ds = ReferenceStyleDataset(tmp / "png", sequences, windows, size)
    return lambda i: torch.stack([ds[(i * batch + j) % len(ds)] for j in range(batch)]).to(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--scheme", default="balanced", help="a joint scheme: equal, balanced, ...")
    parser.add_argument("--override", action="append", default=[], help="any config override (repeatable)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", default="eager,compile,bf16,plain-attn,reference")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs per clip only (meta device)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg, model_cfg, loss = setup(args, device)
    if loss.mode != "joint":
        parser.error("the benchmark times the joint step (equal, balanced, auto_balanced, ...)")
    flops = count_flops(model_cfg, loss, args.batch_size, device)
    print(f"model={args.model} {' '.join(args.override)} | scheme {args.scheme} | batch {args.batch_size} | "
          f"image {model_cfg['encoder']['image_size']} px")
    print(f"FLOPs per clip (forward + backward, counted): {flops / 1e9:.3f} GFLOP/clip = {flops / 1e6:.1f} MFLOP/clip")
    if args.flops_only:
        return 0
    augment = AugmentConfig(**to_plain(cfg.augment))
    size = model_cfg["encoder"]["image_size"]
    cached = torch.randint(0, 256, (4, args.batch_size, 4, size, size, 3), dtype=torch.uint8, device=device)
    low = torch.bfloat16 if device.type == "cuda" or torch.backends.mkldnn.is_available() else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            model = make_model(model_cfg, loss, device)
            batches, kernel, low_precision = (lambda i: cached[i % 4]), "sdpa", False
            if variant == "eager":
                step = make_step(model, loss, augment, device)
            elif variant == "compile":
                step = make_step(model, loss, augment, device, compiled=True)
            elif variant == "bf16":
                step, low_precision = make_step(model, loss, augment, device, autocast_dtype=low), True
            elif variant == "bf16-compile":
                step = make_step(model, loss, augment, device, compiled=True, autocast_dtype=low)
                low_precision = True
            elif variant == "plain-attn":
                step, kernel = make_step(model, loss, augment, device), "plain"
            elif variant == "reference":
                scaler = torch.amp.GradScaler(device.type)
                fp16 = make_step(model, loss, augment, device, autocast_dtype=torch.float16, scaler=scaler,
                                 fused=False)
                batches, low_precision = reference_batches(model_cfg, args.batch_size, device, Path(tmp)), True
                step = lambda batch, gen: fp16(batch, gen, already_float=True)  # noqa: E731 - augmented in the loop
            else:
                parser.error(f"unknown variant {variant!r}")
            with attention_kernel(kernel):
                seconds, peak = timed(step, batches, device, args.steps, args.warmup)
            name, peak_flops = device_peak(device, low_precision)
            achieved = flops * args.batch_size / seconds
            rows.append({"variant": variant, "clips/s": args.batch_size / seconds, "flop/s": achieved,
                         "mfu": achieved / peak_flops if peak_flops else None, "peak": peak})
            del model, step
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    base = rows[0]["clips/s"]
    print(f"device: {name}; {args.steps} timed steps after {args.warmup} warm-up steps per variant")
    print(f"{'variant':<12}{'clips/s':>10}{'ratio':>8}{'TFLOP/s':>10}{'MFU':>8}{'peak memory':>14}")
    for r in rows:
        memory = f"{r['peak'] / 2**30:.2f} GiB" if r["peak"] is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"{r['variant']:<12}{r['clips/s']:>10.1f}{r['clips/s'] / base:>8.2f}{r['flop/s'] / 1e12:>10.3f}"
              f"{mfu:>8}{memory:>14}")
    if device.type != "cuda":
        print(f"(CPU: no MFU without a vendor peak; process peak RSS {rss / 2**30:.2f} GiB over all variants)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
