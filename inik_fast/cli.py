"""The `inik-fast` command line: info, train, eval, deblur, synth, export, bench.

Errors in what the user gave (`errors.UserError`: files, images, checkpoints, settings, options,
backends) end the command with one line on stderr and exit status 1, without a traceback
(INIK_FAST_DEBUG=1 shows it). Any other exception is a failure of the program: its traceback is
printed and the exit status is 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

from .errors import ConfigError, UserError


def cmd_info(args) -> int:
    """Print the build (torch, compiled CUDA archs) and the backends available per device."""
    import torch

    from . import __version__, _extension, backends

    info = _extension.build_info()
    print(f"inik_fast {__version__}, torch {torch.__version__} (CUDA {torch.version.cuda})")
    print(f"extension: {'built' if info['built'] else 'not built: ' + info['error']}")
    print(f"compiled CUDA archs: {info['cuda_archs'] or 'none'}")
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for dev in devices:
        for b in backends.BACKENDS:
            reasons = backends.not_supported_reasons(b, dev)
            print(f"  {dev:8s} {b:10s} {'available' if not reasons else 'unavailable: ' + '; '.join(reasons)}")
    return 0


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------
def _train_flags(p: argparse.ArgumentParser) -> None:
    """Flags of `train`; each overrides the same key of --config (defaults: TrainConfig)."""
    S = argparse.SUPPRESS
    p.add_argument("--config", help="JSON file of training settings (the keys of the flags below, with _ for -)")
    p.add_argument("--model-config", help="JSON file of INIKNetConfig fields (default: the release config)")
    p.add_argument("--init", default=argparse.SUPPRESS, help="start from this checkpoint's weights (fine-tuning; the model config is its own)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S, help="synthetic (default), dpdd, lfdof, realdof, rtf or pairs")
    g.add_argument("--data", default=S, help="root folder of a folder dataset (name its layout with --dataset)")
    g.add_argument("--split", default=S, help="dataset split (default train)")
    g.add_argument("--val-data", default=S, help="validation dataset root (folder datasets)")
    g.add_argument("--val-split", default=S, help="validation split (default test)")
    g.add_argument("--crop", type=int, default=S, help="training crop size (default 256, a multiple of 16)")
    g.add_argument("--max-radius", type=float, default=S, help="synthetic: largest blur radius in px (default 12)")
    g.add_argument("--noise", type=float, default=S, help="synthetic: largest sensor noise level (default 0.02)")
    g.add_argument("--jpeg", type=float, default=S, help="synthetic: share of JPEG-compressed samples (default 0.5)")
    g = p.add_argument_group("schedule")
    g.add_argument("--steps", type=int, default=S, help="optimizer steps (required, or --epochs for a folder dataset)")
    g.add_argument("--epochs", type=float, default=S, help="epochs instead of steps (folder datasets)")
    g.add_argument("--batch", type=int, default=S, help="images per process and micro-batch (default 4)")
    g.add_argument("--accum", type=int, default=S, help="gradient accumulation: micro-batches per step (default 1)")
    g.add_argument("--lr", type=float, default=S, help="Adam learning rate (default 2e-4)")
    g.add_argument("--milestones", type=int, nargs="+", default=S, help="steps where lr *= gamma (default: 24/48/72%% of the steps, as the release)")
    g.add_argument("--gamma", type=float, default=S, help="MultiStepLR factor (default 0.5)")
    g = p.add_argument_group("loss")
    for name, default in (("mse", "1.0, as the release"), ("fft", "0.1, as the release"), ("lpips", "0"), ("vgg", "0")):
        perceptual = "; the release uses 0.1, which needs --perceptual-weights" if default == "0" else ""
        g.add_argument(f"--{name}", type=float, default=S, help=f"weight of the {name.upper()} term (default {default}{perceptual})")
    g.add_argument("--perceptual-weights", default=S, help="folder with the pretrained VGG19 / AlexNet / LPIPS weights")
    g = p.add_argument_group("execution")
    g.add_argument("--backend", default=S, help="auto (the fastest fused backend, default), reference, cpu, triton, cuda or release")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), default=S, help="mixed precision (default none)")
    g.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=int, default=S, help="torch CPU threads")
    g.add_argument("--compile", action="store_true", default=S, help="torch.compile the model (the first steps pay the compilation)")
    g.add_argument("--workers", type=int, default=S, help="data loader worker processes (default 0)")
    g.add_argument("--seed", type=int, default=S, help="seed of the model init and the data stream (default 0)")
    g = p.add_argument_group("bookkeeping")
    g.add_argument("--out", default=S, help="run folder: last.pt and train.log (default runs/train)")
    g.add_argument("--log-every", type=int, default=S, help="steps between log lines (default 10)")
    g.add_argument("--val-every", type=int, default=S, help="steps between validations (default 0: at the end)")
    g.add_argument("--val-count", type=int, default=S, help="validation images (default 4)")
    g.add_argument("--val-crop", type=int, default=S, help="centre crop of validation images (default 128; 0: whole images)")
    g.add_argument("--ckpt-every", type=int, default=S, help="steps between checkpoints (default 100)")
    g.add_argument("--resume", nargs="?", const="auto", default=S, help="continue from PATH, or from OUT/last.pt if it exists")
    g.add_argument("--stop-after", type=int, default=S, help="end this run after N steps, checkpointed (resume later)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bar: print the log lines instead")


def train_settings_from_args(args) -> dict:
    """The training settings the user gave: --config's keys, overridden by the flags given."""
    from .config import INIKNetConfig
    from .train import TrainConfig

    settings = _read_json(args.config, "--config") if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k in TrainConfig.fields()}
    settings.update(flags)
    if args.model_config:
        settings["model"] = INIKNetConfig.from_json(args.model_config).to_dict()
    return settings


def train_config_from_args(args):
    from .train import TrainConfig

    return TrainConfig.from_dict(train_settings_from_args(args))


def _read_json(path, what) -> dict:
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{what} {path}: expected a JSON object of settings, got a {type(obj).__name__}")
    return obj


def cmd_train(args) -> int:
    """Train INIKNet (the release's recipe); torchrun for several processes."""
    from .train import TrainConfig, train

    settings = train_settings_from_args(args)
    result = train(TrainConfig.from_dict(settings), given=settings)
    if result["val"] is not None and int(os.environ.get("RANK", "0")) == 0:
        v = result["val"]
        print(f"final validation: psnr {v['psnr']:.2f} dB (input {v['input_psnr']:.2f}), ssim {v['ssim']:.4f}")
    return 0


# ----------------------------------------------------------------------------------------------
# inference commands
# ----------------------------------------------------------------------------------------------
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _model_flags(p):
    from .deblur import DEFAULT_HALO

    p.add_argument("--checkpoint", help="checkpoint: ours, or a release state dict (default: the bundled one)")
    p.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--backend", default="auto", help="auto (default), reference, cpu, triton, cuda or release")
    p.add_argument("--precision", default="fp32", help="fp32 (default), bf16, or fp16 (GPU only): the dtype of the model and the image")
    p.add_argument("--compile", action="store_true", help="torch.compile the model, with CUDA graphs on a GPU (compiles once per tile shape; pays off on many or large images)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--tile", type=int, help="tile size in px for bounded memory (default: whole image)")
    p.add_argument("--halo", type=int, default=DEFAULT_HALO, help=f"context around each tile in px (default {DEFAULT_HALO})")


def _load_model(args):
    """(model, checkpoint path) of the _model_flags; the flags are checked first."""
    import torch

    from . import checkpoint

    if args.tile is not None and args.tile < 1:
        raise UserError(f"--tile {args.tile}: expected a tile size >= 1 px")
    if args.halo < 0:
        raise UserError(f"--halo {args.halo}: expected a context >= 0 px")
    if args.precision not in PRECISIONS:
        raise UserError(f"--precision {args.precision}: expected one of {', '.join(PRECISIONS)}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: expected an integer >= 1")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.precision == "fp16" and torch.device(device).type != "cuda":
        raise UserError(f"--precision fp16: runs on a CUDA device only (CPUs have no fast float16 convolutions); on {device} use bf16 or fp32")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = args.checkpoint or checkpoint.default_checkpoint()
    model = checkpoint.load_model(path, device=device, backend=args.backend).to(getattr(torch, PRECISIONS[args.precision]))
    if args.compile:  # on a GPU with CUDA graphs: each tile shape's many small launches replay as one graph
        model = torch.compile(model, mode="reduce-overhead" if torch.device(device).type == "cuda" else None)
    return model, path


def _max_memory(args):
    """deblur's budget: None with --tile, else the bytes of --max-memory, or "auto"."""
    from .memory import parse_size

    if args.tile is not None:
        if args.max_memory is not None:
            raise UserError(f"--max-memory {args.max_memory} with --tile {args.tile}: give one (--tile fixes the tile, --max-memory picks it)")
        return None
    return "auto" if args.max_memory is None else parse_size(args.max_memory, "--max-memory")


def cmd_deblur(args) -> int:
    """Deblur image files, folders or globs; write PNG, JPEG, TIFF, BMP or WebP."""
    from .data.image_io import probe_image
    from .deblur import deblur_file, expand_inputs, output_paths
    from .memory import PeakMemory, format_size

    inputs = expand_inputs(args.inputs)
    outputs = output_paths(inputs, args.output, args.format)
    sizes = [probe_image(p, args.max_pixels) for p in inputs]  # headers first: a bad input fails before any work
    max_memory = _max_memory(args)
    model, _ = _load_model(args)
    device = next(model.parameters()).device
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    for src, dst, (w, h) in zip(inputs, outputs, sizes):
        t0 = time.perf_counter()
        with PeakMemory(device) as mem:
            deblur_file(src, dst, model, tile=args.tile, halo=args.halo, max_pixels=args.max_pixels, max_memory=max_memory, progress=progress)
        seconds = time.perf_counter() - t0
        print(f"{src} -> {dst} ({w}x{h}, {seconds:.2f} s)")
        print(f"inik-fast deblur: {src}: {seconds:.2f} s, peak memory {format_size(mem.peak)} ({mem.kind})", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    """PSNR / SSIM (and LPIPS with --perceptual-weights) of a checkpoint on a dataset."""
    from .evaluate import evaluate, format_table

    model, path = _load_model(args)
    report = evaluate(model, args.dataset, args.data, args.split, count=args.count, limit=args.limit, tile=args.tile, halo=args.halo, perceptual_weights=args.perceptual_weights)
    report["checkpoint"] = str(path)
    print(format_table(report))
    if args.json:
        text = json.dumps(report, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)
    return 0


def cmd_synth(args) -> int:
    """Write synthetic defocus pairs (OUT/blurry, OUT/sharp) from scikit-image's photos."""
    from .data import write_pairs

    written = write_pairs(args.out, args.count, split=args.split, crop=args.crop, seed=args.seed, max_radius=args.max_radius, noise=args.noise, jpeg=args.jpeg)
    where = "FAMILY/blurry and FAMILY/sharp, one folder per family" if args.split == "eval" else "blurry and sharp"
    print(f"wrote {len(written)} pairs to {args.out}: {where}")
    return 0


def cmd_export(args) -> int:
    """Write the model of a checkpoint as a weights file (float16 unless --fp32)."""
    from . import INIKNet, INIKNetConfig, checkpoint

    evaluation = None
    if args.eval_json:
        report = _read_json(args.eval_json, "--eval-json")
        try:
            evaluation = checkpoint.eval_summary(report)
        except ValueError as e:
            raise UserError(f"--eval-json {args.eval_json}: {e}") from None
    obj = checkpoint.export_weights(args.checkpoint, args.output, half=not args.fp32, evaluation=evaluation)
    n = sum(p.numel() for p in INIKNet(INIKNetConfig.from_dict(obj["config"])).parameters())  # w0 is shared, listed twice
    print(f"wrote {args.output}: {n} parameters, {Path(args.output).stat().st_size / 2**20:.2f} MiB")
    return 0


def cmd_bench(args) -> int:
    """Time the benchmark workloads per backend, each beside the release's computation."""
    from .benchmarking.command import run_bench

    print(run_bench(args.device, args.backends, args.workloads, args.sizes, args.rounds))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .data.image_io import DEFAULT_MAX_PIXELS
    from .data.synthetic import EVAL_PHOTOS, JPEG, MAX_RADIUS, NOISE
    from .memory import CPU_SHARE, GPU_SHARE

    p = argparse.ArgumentParser(prog="inik-fast", description="INIKNet defocus deblurring with fused ops")
    p.add_argument("--version", action="version", version=f"inik-fast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help=cmd_info.__doc__).set_defaults(func=cmd_info)

    t = sub.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    _train_flags(t)
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("deblur", help=cmd_deblur.__doc__, description=cmd_deblur.__doc__)
    d.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    d.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    d.add_argument("--format", help="png, jpg, tiff, bmp or webp (default: the input's format, else png)")
    d.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help=f"refuse larger images (default {DEFAULT_MAX_PIXELS})")
    _model_flags(d)
    d.add_argument("--max-memory", help="memory the process may reach, e.g. 4GiB or 500MB: picks the tile size (default: what it holds plus "
                   f"{CPU_SHARE:.0%}% of the available RAM, or {GPU_SHARE:.0%}% of the free GPU memory; images that fit are not tiled)")  # %%: argparse formats help with %
    d.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress bar of the tiles on stderr (default: when stderr is a terminal)")
    d.set_defaults(func=cmd_deblur)

    e = sub.add_parser("eval", help=cmd_eval.__doc__, description=cmd_eval.__doc__)
    e.add_argument("--dataset", default="synthetic", help="synthetic (default: held-out photos incl. the motorcycle pair), dpdd, lfdof, realdof, rtf or pairs")
    e.add_argument("--data", help="root folder of a folder dataset (name its layout with --dataset)")
    e.add_argument("--split", default="test", help="dataset split (default test; synthetic: test, the held-out photos, or train, the same families on the training photos)")
    e.add_argument("--count", type=int, default=len(EVAL_PHOTOS), help=f"synthetic: held-out images per family (default {len(EVAL_PHOTOS)})")
    e.add_argument("--limit", type=int, help="evaluate only the first N images")
    e.add_argument("--json", help="also write the report as JSON to this file (- for stdout)")
    e.add_argument("--perceptual-weights", help="folder with the LPIPS weights (adds the LPIPS column)")
    _model_flags(e)
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("synth", help=cmd_synth.__doc__, description=cmd_synth.__doc__)
    s.add_argument("out", help="output folder")
    s.add_argument("--split", choices=("train", "eval"), default="train", help="training crops or the held-out eval images")
    s.add_argument("--count", type=int, default=16, help="number of pairs; eval: per family (default 16)")
    s.add_argument("--crop", type=int, default=256, help="train: crop size (default 256)")
    s.add_argument("--seed", type=int, help="seed (default: 0 for train, the eval seed for eval)")
    s.add_argument("--max-radius", type=float, default=MAX_RADIUS, help=f"largest blur radius in px (default {MAX_RADIUS:g})")
    s.add_argument("--noise", type=float, default=NOISE, help=f"largest sensor noise level (default {NOISE:g})")
    s.add_argument("--jpeg", type=float, default=JPEG, help=f"share of JPEG-compressed images (default {JPEG:g})")
    s.set_defaults(func=cmd_synth)

    x = sub.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__)
    x.add_argument("checkpoint", help="training checkpoint (or any loadable checkpoint)")
    x.add_argument("output", help="weights file to write")
    x.add_argument("--fp32", action="store_true", help="keep float32 weights")
    x.add_argument("--eval-json", help="an `inik-fast eval --json` report of this model, recorded in the file's meta")
    x.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help=cmd_bench.__doc__, description=cmd_bench.__doc__)
    b.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    b.add_argument("--backends", nargs="+", help="backends to time, or release (default: every backend available on the device)")
    b.add_argument("--workloads", nargs="+", help="ikconv_forward, ikconv_train, ikconv_train_dx, atom_bank, model_eval, train_step (default: all)")
    b.add_argument("--sizes", default="quick", help="quick (default: small sizes, about a minute on 2 CPU cores), "
                   "full (the sizes of `make bench` / gpu_check.sh for the device) or tiny (a small model)")
    b.add_argument("--rounds", type=int, default=5, help="timed rounds per backend, each after a round of the release (default and least 5)")
    b.set_defaults(func=cmd_bench)
    return p


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """Warnings (a costly tiling, ...) as one line on stderr, like the errors."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_, **__: print(f"inik-fast {command}: warning: {message}", file=sys.stderr)
        yield


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _one_line_warnings(args.command):
            status = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
        return status
    except KeyboardInterrupt:
        print(f"inik-fast {args.command}: interrupted", file=sys.stderr)
        return 130
    except UserError as e:
        if os.environ.get("INIK_FAST_DEBUG") == "1":
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"inik-fast {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # stdout's reader left (`inik-fast info | head`): end as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141
    except Exception:
        traceback.print_exc()
        print(f"inik-fast {args.command}: internal error (traceback above), not a problem with the input", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
