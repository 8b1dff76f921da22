"""Training: the release's recipe (Adam 2e-4, MultiStepLR x0.5, multi-scale MSE + 0.1 FFT loss,
random crops with flips and rotations) on any dataset of `inik_fast.data`, on one process or
many (torchrun: DDP, nccl on GPU, gloo on CPU).

Exact resumption: sample k of the data stream is a pure function of (seed, k), and step s of
process r uses samples ((s * accum + m) * world + r) * batch + j. A checkpoint holds model,
optimizer, scheduler, grad scaler, step and RNG states, so a resumed run repeats the
uninterrupted one. With the same global batch, world x batch x accum splits see the same
samples (DDP averages gradients, micro-batches divide their loss by accum).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from . import checkpoint as ckpt
from . import model as model_module
from .config import INIKNetConfig
from .data import FOLDER_DATASETS, FOLDER_HINT, PairCrops, SyntheticDefocus, SyntheticEval
from .errors import ConfigError
from .data.augment import center_crop
from .data.synthetic import JPEG, MAX_RADIUS, NOISE, VAL_SEED
from .losses import MultiScaleLoss
from .metrics import batch_psnr, image_metrics
from .release import build_model

RELEASE_MILESTONES = (0.24, 0.48, 0.72)  # epochs 1200, 2400, 3600 of the release's 5000
_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# the Python types each field annotation admits (ints where floats are expected, as JSON writes them)
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,), "dict": (dict,), "None": (type(None),)}


@dataclasses.dataclass
class TrainConfig:
    # data
    dataset: str = "synthetic"  # synthetic or a folder dataset: dpdd, lfdof, realdof, rtf, pairs
    data: str | None = None  # dataset root (folder datasets)
    split: str = "train"
    val_data: str | None = None  # validation root (folder datasets; synthetic validates on held-out photos)
    val_split: str = "test"
    crop: int = 256
    max_radius: float = MAX_RADIUS  # synthetic: blur radius bound, px
    noise: float = NOISE  # synthetic: sensor noise level bound
    jpeg: float = JPEG  # synthetic: share of JPEG-compressed samples
    # schedule
    steps: int | None = None  # optimizer steps; or epochs (folder datasets)
    epochs: float | None = None
    batch: int = 4  # per process and micro-batch
    accum: int = 1  # gradient accumulation: micro-batches per step
    lr: float = 2e-4
    milestones: list | None = None  # steps at which lr *= gamma; default: the release's fractions
    gamma: float = 0.5
    # loss
    mse: float = 1.0
    fft: float = 0.1
    lpips: float = 0.0
    vgg: float = 0.0
    perceptual_weights: str | None = None
    # model and execution
    model: dict | None = None  # INIKNetConfig fields; default: the release config
    init: str | None = None  # a new run starts from this checkpoint's weights (fine-tuning); its config is the model's
    backend: str = "auto"
    amp: str = "none"
    device: str = "auto"
    threads: int | None = None
    compile: bool = False  # torch.compile the model
    workers: int = 0
    seed: int = 0
    # bookkeeping
    out: str = "runs/train"
    log_every: int = 10
    val_every: int = 0  # 0: validate at the end only
    val_count: int = 4
    val_crop: int | None = 128  # 0 or None: whole images
    ckpt_every: int = 100
    resume: str | None = None  # checkpoint path, or "auto": OUT/last.pt if present
    stop_after: int | None = None  # end this run after that many steps (checkpointed); resume later
    progress: bool = True

    @classmethod
    def fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = sorted(set(d) - cls.fields())
        if unknown:
            raise ConfigError(f"train config: unknown keys {unknown}; expected a subset of {sorted(cls.fields())}")
        return cls(**d)

    def check(self) -> None:
        def need(ok, field, expected):
            if not ok:
                raise ConfigError(f"train config {field}={getattr(self, field)!r}: expected {expected}")

        for f in dataclasses.fields(self):  # types first: the range checks below compare values
            need(isinstance(getattr(self, f.name), sum((_TYPES[t] for t in f.type.split(" | ")), ())), f.name, f.type)
        need(self.dataset == "synthetic" or self.dataset in FOLDER_DATASETS, "dataset", f"'synthetic' or one of {sorted(FOLDER_DATASETS)}")
        need(self.dataset == "synthetic" or self.data, "data", f"the root folder of the {self.dataset} dataset")
        for f in ("data", "val_data"):
            need(self.dataset != "synthetic" or getattr(self, f) is None, f, FOLDER_HINT)
        need(self.dataset != "cuhk", "dataset", "a dataset with sharp images (cuhk is blurry only)")
        need(self.steps is not None or self.epochs is not None, "steps", "either steps or epochs (one is required)")
        need(self.steps is None or self.epochs is None, "steps", "either steps or epochs (not both)")
        need(self.steps is None or self.steps >= 1, "steps", "an integer >= 1")
        need(self.epochs is None or (self.epochs > 0 and self.dataset != "synthetic"), "epochs", "> 0, for a folder dataset (the synthetic stream has no epochs)")
        for f in ("crop", "batch", "accum", "log_every", "ckpt_every", "val_count"):
            need(getattr(self, f) >= 1, f, "an integer >= 1")
        need(self.crop % 16 == 0, "crop", "a multiple of 16 (the model's U-Net grid)")
        need(self.val_every >= 0, "val_every", "an integer >= 0")
        need(self.val_crop is None or self.val_crop >= 0, "val_crop", "an integer >= 0 (0: whole images)")
        need(self.amp in _AMP, "amp", f"one of {tuple(_AMP)}")
        need(self.lr > 0, "lr", "a learning rate > 0")
        need(0 < self.gamma <= 1, "gamma", "a factor in (0, 1]")
        need(self.milestones is None or all(isinstance(m, int) and m >= 1 for m in self.milestones), "milestones", "a list of steps >= 1")
        need(self.stop_after is None or self.stop_after >= 1, "stop_after", "an integer >= 1")
        need(not (self.compile and model_module._COMPILED_BACKWARD_BROKEN), "compile",
             "False on torch 2.11, whose torch.compile gives this model wrong parameter gradients (train eagerly, or use torch 2.14)")  # fmt: skip


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
class _StreamDataset(Dataset):
    """Map-style view of a sample stream (index k -> sample k) for the DataLoader."""

    def __init__(self, stream):
        self.stream = stream

    def __len__(self):
        return 2**62

    def __getitem__(self, k):
        return self.stream.sample(k)


class _StepBatches(Sampler):
    """The stream indices of this process's micro-batches, from step `start` on."""

    def __init__(self, start, steps, batch, accum, rank, world):
        self.start, self.steps, self.batch, self.accum, self.rank, self.world = start, steps, batch, accum, rank, world

    def __len__(self):
        return (self.steps - self.start) * self.accum

    def __iter__(self):
        for s in range(self.start, self.steps):
            for m in range(self.accum):
                base = ((s * self.accum + m) * self.world + self.rank) * self.batch
                yield list(range(base, base + self.batch))


def make_stream(cfg: TrainConfig):
    if cfg.dataset == "synthetic":
        return SyntheticDefocus(cfg.crop, cfg.seed, cfg.max_radius, cfg.noise, jpeg=cfg.jpeg)
    return PairCrops(FOLDER_DATASETS[cfg.dataset](cfg.data, cfg.split), cfg.crop, cfg.seed)


def make_val_items(cfg: TrainConfig) -> list[dict] | None:
    """The first val_count validation images, centre-cropped to val_crop; None without a set."""
    if cfg.dataset == "synthetic":  # the training mixture on the held-out photos, other draws than `inik-fast eval`'s
        ds = SyntheticEval(cfg.val_count, VAL_SEED, cfg.max_radius, cfg.noise, cfg.val_crop or None, families=("train",), jpeg=cfg.jpeg)
    elif cfg.val_data is not None:
        ds = FOLDER_DATASETS[cfg.dataset](cfg.val_data, cfg.val_split)
    else:
        return None
    items = [ds[i] for i in range(min(cfg.val_count, len(ds)))]
    if cfg.val_crop:
        items = [{k: center_crop(v, cfg.val_crop) if isinstance(v, torch.Tensor) else v for k, v in it.items()} for it in items]
    return items


def total_steps(cfg: TrainConfig, stream, world: int) -> int:
    """cfg.steps, or the steps of cfg.epochs over the folder dataset of `stream`."""
    if cfg.steps is not None:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * len(stream.dataset) / (cfg.batch * cfg.accum * world)))


# ----------------------------------------------------------------------------------------------
# processes and devices
# ----------------------------------------------------------------------------------------------
def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; 1 process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def _rng_state(device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
class _Log:
    """train.log in OUT (rank 0 only): a header, then one line per event; flushed each time.
    With `echo` (no progress bar) every line is printed too."""

    def __init__(self, path, enabled, echo=False):
        self.f = open(path, "a") if enabled else None
        self.echo = enabled and echo

    def __call__(self, msg: str):
        if self.f:
            self.f.write(msg + "\n")
            self.f.flush()
        if self.echo:
            print(msg, flush=True)

    def close(self):
        if self.f:
            self.f.close()


def validate(model, items: list[dict], device, amp_dtype=None) -> dict:
    """Mean PSNR / SSIM of the full-resolution output and of the blurry input."""
    was_training = model.training
    model.eval()
    rows = []
    with torch.no_grad(), _autocast(device, amp_dtype):
        for item in items:
            out = model(item["blurry"][None].to(device))[-1][0].float().clamp(0, 1).cpu()
            m = image_metrics(out, item["sharp"])
            m0 = image_metrics(item["blurry"], item["sharp"])
            rows.append((m["psnr"], m["ssim"], m0["psnr"], m0["ssim"]))
    model.train(was_training)
    mean = [sum(c) / len(rows) for c in zip(*rows)]
    return dict(zip(("psnr", "ssim", "input_psnr", "input_ssim"), mean))


def _autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def train(cfg: TrainConfig, given=None) -> dict:
    """Run (or resume) training; returns {"step", "checkpoint", "val", "losses" (this run's, per step)}.

    `given`: the names of the settings the user chose (the CLI passes its flags and --config
    keys; default: the fields of `cfg` that differ from TrainConfig's defaults). A resumed run
    keeps its checkpoint's settings: a given one that differs is refused, except the settings of
    this invocation (where and how it runs, bookkeeping) and steps / epochs, which set a new length.
    """
    rank, world, local_rank = _distributed()
    out = Path(cfg.out)
    resume_path = _resume_path(cfg, out)
    state = ckpt.training_state(resume_path) if resume_path else None
    if state is not None:
        cfg = _merge_resumed(cfg, state["train"], given, resume_path, announce=rank == 0)
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(cfg, state, resume_path, out, rank, world, device)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _resume_path(cfg, out):
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        last = out / "last.pt"
        return last if last.is_file() else None
    return Path(cfg.resume)


# Settings of an invocation rather than of the run: a resumed run takes them from the new one.
_INVOCATION = ("resume", "stop_after", "progress", "workers", "threads", "compile", "device", "backend", "log_every", "val_every", "ckpt_every", "out")
_LENGTH = ("steps", "epochs")


def _merge_resumed(cfg: TrainConfig, stored: dict, given, path, announce: bool) -> TrainConfig:
    """The stored run's settings with this invocation's; refuses given settings that would change the run."""
    merged = TrainConfig.from_dict(stored)
    if given is None:
        defaults = TrainConfig()
        given = [f for f in TrainConfig.fields() if getattr(cfg, f) != getattr(defaults, f)]

    def value(c, f):  # a model config compares by its fields, partial dicts filled with defaults
        return INIKNetConfig.from_dict(c.model or {}) if f == "model" else getattr(c, f)

    changed = [f for f in sorted(set(given) - set(_INVOCATION) - set(_LENGTH)) if value(cfg, f) != value(merged, f)]
    if changed:
        asked = ", ".join(f"{f}={getattr(cfg, f)!r} (the run has {getattr(merged, f)!r})" for f in changed)
        raise ConfigError(f"resume {path}: {asked}: a resumed run keeps its settings; drop these, or start a new run in another --out")
    for f in _INVOCATION:
        setattr(merged, f, getattr(cfg, f))
    if (cfg.steps, cfg.epochs) != (None, None) and (cfg.steps, cfg.epochs) != (merged.steps, merged.epochs):
        if announce:  # a new length keeps the run's milestones
            new = f"steps {cfg.steps}" if cfg.steps is not None else f"epochs {cfg.epochs}"
            print(f"resume {path}: {new} (the run had {merged.steps} steps)")
        merged.steps, merged.epochs = cfg.steps, cfg.epochs
    return merged


def _train(cfg, state, resume_path, out, rank, world, device):
    main = rank == 0
    amp_dtype = _AMP[cfg.amp]
    stream = make_stream(cfg)
    steps = total_steps(cfg, stream, world)
    if cfg.milestones is None:
        cfg.milestones = [max(1, round(f * steps)) for f in RELEASE_MILESTONES]
    if cfg.steps is None:
        cfg.steps, cfg.epochs = steps, None  # resolved once, stored in the checkpoint
    init_state = None
    if cfg.init is not None and state is None:  # a resumed run has its weights already
        init_state, init_cfg = ckpt.model_state(ckpt.load_file(cfg.init), cfg.init)
        if cfg.model and INIKNetConfig.from_dict(cfg.model) != init_cfg:
            raise ConfigError(f"init {cfg.init}: its model config {init_cfg.to_dict()} differs from model={cfg.model}")
        cfg.model = init_cfg.to_dict()
    model_cfg = INIKNetConfig.from_dict(cfg.model) if cfg.model else INIKNetConfig()
    cfg.model = model_cfg.to_dict()

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, cfg.backend).to(device)
    if init_state is not None:
        model.load_state_dict({k: v.float() for k, v in init_state.items()}, strict=True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], device)
        start = int(state["step"])
    stop = min(steps, start + cfg.stop_after) if cfg.stop_after else steps
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)  # shares model's parameters: checkpoints and validation use model

    loss_fn = MultiScaleLoss(cfg.mse, cfg.fft, cfg.lpips, cfg.vgg, cfg.perceptual_weights).to(device)
    loader = DataLoader(
        _StreamDataset(stream),
        batch_sampler=_StepBatches(start, stop, cfg.batch, cfg.accum, rank, world),
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
    )
    val_items = make_val_items(cfg) if main else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
    log = _Log(out / "train.log", main, echo=not cfg.progress)
    log(_header(cfg, model, device, world, start, steps, resume_path))

    from tqdm import tqdm

    bar = tqdm(total=stop, initial=start, unit="step", disable=not (main and cfg.progress), dynamic_ncols=True)
    batches = iter(loader)
    t_run, val, history = time.perf_counter(), None, []
    model.train()
    for step in range(start, stop):
        t0, step_loss = time.perf_counter(), 0.0
        for m in range(cfg.accum):
            blurry, sharp = (t.to(device, non_blocking=True) for t in next(batches))
            sync = net.no_sync() if world > 1 and m < cfg.accum - 1 else contextlib.nullcontext()
            with sync:
                with _autocast(device, amp_dtype):
                    outs = net(blurry)
                loss, parts = loss_fn(outs, sharp)
                scaler.scale(loss / cfg.accum).backward()
            step_loss += loss.item() / cfg.accum
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        done = step + 1
        history.append(step_loss)
        if main:
            dt = time.perf_counter() - t0
            psnr = batch_psnr(outs[-1].detach().float().clamp(0, 1), sharp)
            ips = cfg.batch * cfg.accum * world / dt
            bar.set_postfix(loss=f"{step_loss:.4f}", psnr=f"{psnr:.2f}", img_s=f"{ips:.2f}", refresh=False)
            bar.update(1)
            if done % cfg.log_every == 0 or done == stop:
                terms = " ".join(f"{k} {v.item():.5f}" for k, v in parts.items())
                log(
                    f"step {done}/{steps} loss {step_loss:.5f} {terms} psnr {psnr:.2f} "
                    f"lr {sched.get_last_lr()[0]:.2e} img/s {ips:.2f} step_s {dt:.2f} elapsed {_hms(time.perf_counter() - t_run)}"
                )
        if val_items and ((cfg.val_every and done % cfg.val_every == 0) or done == steps):
            val = validate(model, val_items, device, amp_dtype)
            msg = _val_line(done, val)
            log(msg)
            if cfg.progress:
                bar.write(msg)
        if done % cfg.ckpt_every == 0 or done == stop:
            if main:
                _save(out / "last.pt", cfg, model, opt, sched, scaler, done, device)
            if world > 1:
                dist.barrier()
    bar.close()
    if main and stop == steps:
        log(f"done: {steps} steps in {_hms(time.perf_counter() - t_run)} this run")
    elif main:
        hint = f"stopped after step {stop} of {steps}; to continue, run the same command with --resume (it reads {out / 'last.pt'})"
        log(hint)
        if cfg.progress:
            print(hint)
    log.close()
    return {"step": stop, "checkpoint": str(out / "last.pt"), "val": val, "losses": history}


def _save(path, cfg, model, opt, sched, scaler, step, device):
    stored = dataclasses.asdict(cfg)
    stored.update(resume=None, stop_after=None)
    ckpt.atomic_save(
        {
            "format": ckpt.TRAIN_FORMAT,
            "version": 1,
            "config": model.config.to_dict(),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "rng": _rng_state(device),
            "train": stored,
        },
        path,
    )


def _header(cfg, model, device, world, start, steps, resume_path) -> str:
    from . import __version__

    # Under autocast the inverse-kernel conv sees the autocast dtype (which the cpu op does not
    # take), while the atom bank stays in the parameters' dtype: name what each really runs on.
    param_dtype = next(model.parameters()).dtype
    conv_dtype = _AMP[cfg.amp] or param_dtype
    backend, bank = model.ops_backend(device, conv_dtype), model.ops_backend(device, param_dtype)
    if bank != backend:
        backend += f" ({str(conv_dtype).replace('torch.', '')} inverse-kernel conv; atom bank {bank})"
    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        f"# inik-fast {__version__} train, torch {torch.__version__}, {platform.machine()} {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads, device {device}, world {world}, backend {backend}, params {n_params}",
        f"# {'resumed from ' + str(resume_path) + ' at step ' + str(start) if resume_path else 'new run'}, {steps} steps",
        "# config " + json.dumps(dataclasses.asdict(cfg), sort_keys=True),
    ]
    return "\n".join(lines)


def _val_line(step, val) -> str:
    gain = val["psnr"] - val["input_psnr"]
    return (
        f"val step {step}: psnr {val['psnr']:.2f} (input {val['input_psnr']:.2f}, {gain:+.2f} dB) "
        f"ssim {val['ssim']:.4f} (input {val['input_ssim']:.4f})"
    )


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
