"""Image quality metrics, from scikit-image (PSNR, SSIM; data range 1, as the release's
evaluation) and LPIPS when its weights are available (`inik_fast.perceptual`)."""
from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _hwc(img) -> np.ndarray:
    """[C, H, W] tensor (or [H, W, C] array) as float64 [H, W, C] clipped to [0, 1]."""
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu().numpy().transpose(1, 2, 0)
    return np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)


def psnr(pred, target) -> float:
    """PSNR in dB of one image (prediction clipped to [0, 1])."""
    return float(peak_signal_noise_ratio(_hwc(target), _hwc(pred), data_range=1.0))


def ssim(pred, target) -> float:
    """SSIM of one colour image (scikit-image defaults: 7x7 uniform window, per channel)."""
    return float(structural_similarity(_hwc(target), _hwc(pred), data_range=1.0, channel_axis=-1))


def batch_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean PSNR over a [B, C, H, W] batch."""
    return float(np.mean([psnr(p, t) for p, t in zip(pred, target)]))


def image_metrics(pred: torch.Tensor, target: torch.Tensor, lpips=None) -> dict:
    """{psnr, ssim[, lpips]} of one [C, H, W] image."""
    m = {"psnr": psnr(pred, target), "ssim": ssim(pred, target)}
    if lpips is not None:
        with torch.no_grad():
            dev = next(lpips.buffers()).device
            m["lpips"] = float(lpips(pred[None].float().clamp(0, 1).to(dev), target[None].float().to(dev))[0])
    return m
