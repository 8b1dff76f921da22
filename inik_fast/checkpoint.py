"""Checkpoints: atomic saving, and loading (always with weights_only=True) of

  - our training checkpoints   {"format": "inik_fast.train", "config", "model", "optimizer",
                                "scheduler", "scaler", "step", "rng", "train"}
  - our weights files          {"format": "inik_fast.weights", "config", "model", "meta"}
                               (the bundled default, float16)
  - release checkpoints        a plain INIKNet state dict (the release saves
                               `net.state_dict()`), or a dict holding one under "state_dict",
                               "model", "net" or "params"; "module." prefixes (DataParallel)
                               are removed. The config is read off the tensor shapes.

Every failure is a `CheckpointError` with a one-line message.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import torch

from .config import INIKNetConfig
from .data.image_io import atomic_write_bytes
from .errors import UserError

TRAIN_FORMAT = "inik_fast.train"
WEIGHTS_FORMAT = "inik_fast.weights"
TRAIN_KEYS = ("config", "model", "optimizer", "scheduler", "scaler", "step", "rng", "train")
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "default.pt"
_WRAPPER_KEYS = ("state_dict", "model", "net", "params")
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message is one line."""


def atomic_save(obj, path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves a
    truncated checkpoint under the final name."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:  # an output folder that cannot be written: the user's choice of path
        raise CheckpointError(f"checkpoint {path}: cannot write ({e.strerror or e})") from None


def _not_torch_file(path: Path) -> str | None:
    """What the file is instead, when it cannot be a torch.save file (a zip archive, or the
    legacy format's pickle); None when it may be one."""
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return None
    if not head:
        return "it is empty"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return f"it starts like a {im.format} image"
    except (UnidentifiedImageError, OSError):
        return "it is neither a zip archive nor a pickle"


def load_file(path) -> dict:
    """The checkpoint's contents, loaded with weights_only=True on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if (what := _not_torch_file(path)) is not None:
        raise CheckpointError(f"checkpoint {path}: not a PyTorch checkpoint ({what})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "Weights only load failed" in str(e):
            first = "it holds Python objects other than tensors and plain containers"
        raise CheckpointError(f"checkpoint {path}: cannot be loaded (truncated, or not a PyTorch checkpoint: {first})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def _strip(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        for p in _PREFIXES:
            if isinstance(k, str) and k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def infer_config(sd: dict) -> INIKNetConfig:
    """The INIKNetConfig of a release-layout state dict, read off its shapes and keys.
    (w_min / w_max only set the initial frequencies, which the state dict overrides when they
    are learnable; otherwise the release values 2 and 12 are assumed.)"""
    first = sd["unet.feat_extract.0.main.0.weight"]
    inr = "inr_conv.kernelINR_list.0.layers.0.weight"
    kw = dict(
        in_ch=first.shape[1],
        base_ch=first.shape[0],
        num_res_unet=_count(sd, r"unet\.Encoder\.0\.layers\.(\d+)\."),
        num_res_lstm=_count(sd, r"lstms_basis_select\.left2right\.cell\.layers\.layers\.(\d+)\."),
        basis_num=sd["basis_select.weight"].shape[0],
        max_kernel_size=2 * (sd["scale_select.weight"].shape[0] - 1) + 1,
    )
    if inr in sd:
        kw.update(
            coords="polar" if sd[inr].shape[1] == 3 else "grid",
            inr_hidden=sd[inr].shape[0],
            learnable_freq="inr_conv.kernelINR_list.0.layers.1.w0" in sd,
        )
    else:
        kw["atoms"] = "free"
    return INIKNetConfig(**kw)


def training_state(path) -> dict:
    """A training checkpoint to resume from, holding every entry `inik_fast.train` saves."""
    obj = load_file(path)
    if obj.get("format") != TRAIN_FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an inik-fast training checkpoint; cannot resume from it")
    missing = [k for k in TRAIN_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path}: damaged training checkpoint (no {', '.join(missing)}); cannot resume from it")
    return obj


def model_state(obj: dict, path) -> tuple[dict, INIKNetConfig]:
    """(state dict, config) of any supported checkpoint layout."""
    if obj.get("format") in (TRAIN_FORMAT, WEIGHTS_FORMAT):
        try:
            return obj["model"], INIKNetConfig.from_dict(obj["config"])
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint {path}: damaged {obj['format']} file ({e})") from None
    sd = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), obj)
    sd = _strip(sd)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"checkpoint {path}: not an INIKNet checkpoint (expected a state dict of tensors)")
    try:
        return sd, infer_config(sd)
    except KeyError as e:
        raise CheckpointError(f"checkpoint {path}: not an INIKNet checkpoint (no {e} entry)") from None
    except (IndexError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: not an INIKNet checkpoint (its tensor shapes give no valid config: {e})") from None


def load_model(path, device="cpu", backend: str = "auto", model_class=None):
    """An INIKNet (or `model_class`) in eval mode with the checkpoint's weights (float32
    parameters); backend "release" gives the release's computation (`release.ReleaseINIKNet`)."""
    from .release import build_model

    sd, cfg = model_state(load_file(path), path)
    model = model_class(cfg, backend=backend) if model_class else build_model(cfg, backend)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"checkpoint {path}: does not match INIKNet{cfg.to_dict()} ({detail})") from None
    return model.to(device).eval()


def default_checkpoint() -> Path:
    """The bundled default checkpoint; a clear error when it has not been trained yet."""
    if not DEFAULT_WEIGHTS.is_file():
        raise CheckpointError(
            f"the default checkpoint {DEFAULT_WEIGHTS} is missing: train it with scripts/train_default.sh "
            "or pass --checkpoint PATH"
        )
    return DEFAULT_WEIGHTS


def eval_summary(report: dict) -> dict:
    """The headline of an `inik-fast eval --json` report, for a weights file's meta."""
    try:
        m = report["mean"]
        return {
            "dataset": report["dataset"],
            "split": report["split"],
            "images": len(report["images"]),
            "backend": report["backend"],
            "psnr_in": m["input"]["psnr"],
            "psnr_out": m["output"]["psnr"],
            "psnr_gain": m["psnr_gain"],
            "ssim_in": m["input"]["ssim"],
            "ssim_out": m["output"]["ssim"],
            **({"family_gains": {f: fm["psnr_gain"] for f, fm in report["families"].items()}} if "families" in report else {}),
        }
    except (KeyError, TypeError) as e:
        raise UserError(f"not an `inik-fast eval --json` report (no {e} entry)") from None


def export_weights(src, dst, half: bool = True, evaluation: dict | None = None) -> dict:
    """Write the model of checkpoint `src` as a weights file (float16 when `half`). Its meta says
    how the model was made: the source file, the software, and from a training checkpoint the
    step and training settings; `evaluation` (an `eval_summary`) gives its scores."""
    from . import __version__

    obj = load_file(src)
    sd, cfg = model_state(obj, src)
    meta = {"source": Path(src).name, "software": f"inik-fast {__version__}, torch {torch.__version__}"}
    if obj.get("format") == TRAIN_FORMAT:
        meta.update(step=int(obj["step"]), train=obj["train"])
    if evaluation is not None:
        meta["eval"] = evaluation
    dtype = torch.float16 if half else torch.float32
    weights = {
        "format": WEIGHTS_FORMAT,
        "config": cfg.to_dict(),
        "model": {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()},
        "meta": meta,
    }
    atomic_save(weights, dst)
    return weights
