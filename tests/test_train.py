"""Losses, metrics, checkpoints and the training loop (tiny model, tiny crops)."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inik_fast import backends
from inik_fast.checkpoint import DEFAULT_WEIGHTS, TRAIN_FORMAT, CheckpointError, atomic_save, load_file
from inik_fast.losses import MultiScaleLoss, fft_loss
from inik_fast.metrics import psnr, ssim
from inik_fast.perceptual import LPIPS, PerceptualWeightsError, VGGFeatureL1
from inik_fast.train import TrainConfig, make_val_items, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=2, max_kernel_size=5)


def run(tmp_path, name="run", **kw):
    settings = dict(model=TINY, steps=4, crop=32, batch=2, out=str(tmp_path / name), ckpt_every=2, log_every=1,
                    val_count=1, val_crop=32, progress=False, backend="reference")  # fmt: skip
    settings.update(kw)
    return train(TrainConfig(**settings))


def params(path):
    return load_file(path)["model"]


def gradient_rel_diff(path_a, path_b) -> float:
    """Relative norm of the difference of Adam's first moments in two checkpoints, all parameters
    together. After the same steps each is the same linear combination of the steps' gradients,
    so unlike the parameters (Adam ignores a uniform gradient scale) it sees a gradient off by
    any factor."""
    a, b = (load_file(p)["optimizer"]["state"] for p in (path_a, path_b))
    assert a.keys() == b.keys() and a
    num = sum((a[i]["exp_avg"] - b[i]["exp_avg"]).square().sum() for i in a)
    return (num / sum(b[i]["exp_avg"].square().sum() for i in b)).sqrt().item()


# ----------------------------------------------------------------------------------------------
# losses and metrics
# ----------------------------------------------------------------------------------------------
def test_fft_loss_is_the_release_formula():
    x, y = torch.rand(2, 3, 8, 12), torch.rand(2, 3, 8, 12)
    fx, fy = torch.fft.fft2(x), torch.fft.fft2(y)
    expected = (fx.real - fy.real).abs().mean() + (fx.imag - fy.imag).abs().mean()
    assert torch.allclose(fft_loss(x, y), expected, rtol=1e-5)


def test_multiscale_loss_resizes_the_target_bilinearly():
    y = torch.rand(2, 3, 32, 32)
    outs = [torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)]
    total, parts = MultiScaleLoss()(outs, y)
    ys = [F.interpolate(y, scale_factor=s, mode="bilinear", align_corners=False) for s in (0.25, 0.5)] + [y]
    mse = sum(F.mse_loss(o, t) for o, t in zip(outs, ys))
    fft = sum(fft_loss(o, t) for o, t in zip(outs, ys))
    assert torch.allclose(total, mse + 0.1 * fft, rtol=1e-5)
    assert torch.allclose(parts["mse"], mse) and torch.allclose(parts["fft"], fft)
    with pytest.raises(ValueError, match="loss weight fft=-1"):
        MultiScaleLoss(fft=-1)


def fake_perceptual_weights(folder: Path):
    """Random weights with torchvision's and the lpips package's key layouts (no download)."""
    g = torch.Generator().manual_seed(0)
    vgg, cin = {}, 3
    for i, c in zip((0, 2, 5, 7, 10, 12, 14, 16), (64, 64, 128, 128, 256, 256, 256, 256)):
        vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"] = torch.randn(c, cin, 3, 3, generator=g) * 0.05, torch.zeros(c)
        cin = c
    vgg["classifier.0.weight"] = torch.zeros(2, 2)
    alex = {}
    for i, (c, ci, k) in zip((0, 3, 6, 8, 10), ((64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3))):
        alex[f"features.{i}.weight"], alex[f"features.{i}.bias"] = torch.randn(c, ci, k, k, generator=g) * 0.05, torch.zeros(c)
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate((64, 192, 384, 256, 256))}
    folder.mkdir()
    torch.save(vgg, folder / "vgg19-dcbb9e9d.pth")
    torch.save(alex, folder / "alexnet-owt-7be5be79.pth")
    torch.save(heads, folder / "lpips_alex.pth")
    return folder


def test_perceptual_terms_need_local_weights(tmp_path):
    with pytest.raises(PerceptualWeightsError, match="cannot be downloaded here"):
        MultiScaleLoss(lpips=0.1)
    with pytest.raises(PerceptualWeightsError, match="no vgg19"):
        VGGFeatureL1(tmp_path)
    folder = fake_perceptual_weights(tmp_path / "w")
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    vgg, lp = VGGFeatureL1(folder), LPIPS(folder)
    assert float(vgg(x, x)) == 0 and float(vgg(x, y)) > 0
    assert lp(x, x).shape == (2,) and torch.all(lp(x, x) == 0) and torch.all(lp(x, y) > 0)
    total, parts = MultiScaleLoss(lpips=0.1, vgg=0.1, perceptual_weights=folder)([x], y)
    assert set(parts) == {"mse", "fft", "lpips", "vgg"}
    assert torch.allclose(total, parts["mse"] + 0.1 * (parts["fft"] + parts["lpips"] + parts["vgg"]))
    torch.save({"features.0.weight": torch.zeros(1)}, folder / "vgg19-dcbb9e9d.pth")
    with pytest.raises(PerceptualWeightsError, match="not usable VGG19 weights"):
        VGGFeatureL1(folder)


def pass_through(cout, cin, k, routes, bias=None):
    """Conv weight [cout, cin, k, k] whose centre tap sends input channel i to output channel o
    times f, for (o, i, f) in routes, and its bias (zero unless given)."""
    w = torch.zeros(cout, cin, k, k)
    for o, i, f in routes:
        w[o, i, k // 2, k // 2] = f
    return w, torch.zeros(cout) if bias is None else bias


def test_vgg_loss_golden_value(tmp_path):
    """VGG19 weights that copy input channel 0 along channel 0, and its negative into channel 1
    at each tapped conv: with x = 0 and y = c in channel 0, each tap (before its ReLU) differs by
    c in 2 of its n channels, so the loss is 2c (1/64 + 1/128 + 1/256)."""
    layers = {0: (64, 3, [(0, 0, 1)]), 2: (64, 64, [(0, 0, 1), (1, 0, -1)]), 5: (128, 64, [(0, 0, 1)]),
              7: (128, 128, [(0, 0, 1), (1, 0, -1)]), 10: (256, 128, [(0, 0, 1)]), 12: (256, 256, [(0, 0, 1)]),
              14: (256, 256, [(0, 0, 1), (1, 0, -1)])}  # fmt: skip
    sd = {}
    for i, (cout, cin, routes) in layers.items():
        sd[f"features.{i}.weight"], sd[f"features.{i}.bias"] = pass_through(cout, cin, 3, routes)
    (tmp_path / "w").mkdir()
    torch.save(sd, tmp_path / "w" / "vgg19-dcbb9e9d.pth")
    c = 0.5
    x, y = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.3)
    y[:, 0] = c
    assert float(VGGFeatureL1(tmp_path / "w")(x, y)) == pytest.approx(2 * c * (1 / 64 + 1 / 128 + 1 / 256), rel=1e-6)


def test_lpips_golden_value(tmp_path):
    """AlexNet weights with two live channels: a constant 1 (conv1's bias) and conv1's input
    channel 0, both carried through every layer. LPIPS maps pixels p to (2p - 1 - shift) / scale:
    x = 0 gives -2.1 in channel 0 (0 after the ReLU), y = (1 + shift + scale) / 2 gives 1. The
    unit-normalised features are then (1, 0) and (1, 1)/sqrt(2) at every tap, so with head
    weights (1, k + 1) at tap k the distance is sum_k (1 - 1/sqrt(2))^2 + (k + 1)/2."""
    alex = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
    sd = {}
    for i, (cout, cin, k) in alex.items():
        first = i == 0
        routes = [(1, 0, 1)] if first else [(0, 0, 1), (1, 1, 1)]
        bias = torch.zeros(cout).index_fill_(0, torch.tensor([0]), 1.0) if first else None
        sd[f"features.{i}.weight"], sd[f"features.{i}.bias"] = pass_through(cout, cin, k, routes, bias)
    heads = {}
    for k, (cout, _, _) in enumerate(alex.values()):
        w = torch.ones(1, cout, 1, 1)  # the dead channels' weights do not matter
        w[0, 1] = k + 1
        heads[f"lin{k}.model.1.weight"] = w
    (tmp_path / "w").mkdir()
    torch.save(sd, tmp_path / "w" / "alexnet-owt-7be5be79.pth")
    torch.save(heads, tmp_path / "w" / "lpips_alex.pth")
    x = torch.rand(2, 3, 64, 64)
    x[0, 0] = 0
    y = x.clone()
    y[0, 0] = (1 - 0.030 + 0.458) / 2  # LPIPS's shift and scale of channel 0
    d = LPIPS(tmp_path / "w")(x, y)
    assert d[0].item() == pytest.approx(5 * (1 - 2**-0.5) ** 2 + (1 + 2 + 3 + 4 + 5) / 2, rel=1e-5)
    assert d[1].item() == 0  # identical images


def test_psnr_and_ssim_use_data_range_1():
    y = torch.full((3, 16, 16), 0.5)
    assert psnr(y + 0.1, y) == pytest.approx(20.0)
    assert ssim(y, y) == pytest.approx(1.0)
    assert psnr(y + 2.0, y) == pytest.approx(psnr(torch.ones(3, 16, 16), y))  # the prediction is clipped to [0, 1]


# ----------------------------------------------------------------------------------------------
# the training loop
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings,message", [
    (dict(steps="10"), "steps='10': expected int | None"),  # a TypeError from the range checks before
    (dict(gamma=2.0), "gamma=2.0: expected a factor in (0, 1]"),  # the message named lr
    (dict(val_crop=-1), "val_crop=-1: expected an integer >= 0"),
    (dict(milestones=[0, 5]), "milestones=[0, 5]: expected a list of steps >= 1"),
])  # fmt: skip
def test_config_errors_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=re.escape("train config " + message)):
        TrainConfig(**{"steps": 1, **settings}).check()


def test_val_crop_0_validates_on_whole_images():
    # crop 0 reached SyntheticEval as an empty crop and failed; folder datasets read it as "whole images"
    items = make_val_items(TrainConfig(steps=1, val_count=1, val_crop=0, max_radius=1.0))
    assert items[0]["blurry"].shape == (3, 500, 741)  # the whole left motorcycle view


def test_checkpoint_holds_the_whole_state(tmp_path):
    res = run(tmp_path, steps=2)
    ck = load_file(res["checkpoint"])  # weights_only=True
    assert ck["format"] == TRAIN_FORMAT and ck["step"] == 2
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "train", "config"} <= set(ck)
    assert ck["scheduler"]["last_epoch"] == 2 and ck["optimizer"]["state"]
    assert ck["train"]["milestones"] == [1, 1, 1]  # the release's 24/48/72% of 2 steps, rounded, at least 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.pt", "train.log"]  # no temporary files
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step 2/2 loss" in log and "val step 2: psnr" in log and "img/s" in log


def test_resume_continues_exactly(tmp_path):
    full = run(tmp_path, "full", steps=4)
    first = run(tmp_path, "split", steps=4, stop_after=2)  # "killed" after its checkpoint at step 2
    assert first["step"] == 2 and load_file(first["checkpoint"])["step"] == 2
    second = run(tmp_path, "split", steps=4, resume="auto")
    assert second["step"] == 4 and second["losses"] == full["losses"][2:]
    a, b = params(full["checkpoint"]), params(second["checkpoint"])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_killed_process_resumes_from_its_last_checkpoint(tmp_path):
    """A real SIGKILL mid-run, then `--resume auto`: the same parameters as the uninterrupted run."""
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))

    def cmd(out):
        return [sys.executable, "-m", "inik_fast", "train", "--model-config", str(tmp_path / "tiny.json"), "--steps", "30",
                "--crop", "32", "--batch", "2", "--backend", "reference", "--out", str(tmp_path / out), "--ckpt-every", "3",
                "--val-count", "1", "--val-crop", "32", "--no-progress", "--resume", "auto"]  # fmt: skip

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd("full"), cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(cmd("killed"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert 3 <= load_file(last)["step"] < 30  # killed mid-run, after a checkpoint
    subprocess.run(cmd("killed"), cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    assert load_file(last)["step"] == 30
    a, b = params(tmp_path / "full" / "last.pt"), params(last)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_starts_from_a_checkpoints_weights(tmp_path):
    base = run(tmp_path, "base", steps=2)
    tuned = run(tmp_path, "tuned", steps=1, init=base["checkpoint"], lr=1e-12)  # one negligible step
    fresh = run(tmp_path, "fresh", steps=1, lr=1e-12)
    a, b, c = params(base["checkpoint"]), params(tuned["checkpoint"]), params(fresh["checkpoint"])
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-9) for k in a)
    assert max((a[k] - c[k]).abs().max() for k in a) > 1e-5  # the same run without init: the 2 steps of base apart
    assert load_file(tuned["checkpoint"])["train"]["init"] == base["checkpoint"]
    with pytest.raises(ValueError, match="init .*differs from model="):
        run(tmp_path, "mismatch", steps=1, init=base["checkpoint"], model={**TINY, "basis_num": 3})


def test_resume_refuses_flags_that_would_change_the_run(tmp_path, capsys):
    """--crop was dropped silently on resume while --steps was honoured; an explicit flag that
    equals the default (--batch 4) must count as given too."""
    from inik_fast.cli import main

    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    flags = {"--model-config": tmp_path / "tiny.json", "--steps": 2, "--crop": 32, "--batch": 2, "--backend": "reference",
             "--out": tmp_path / "run", "--val-count": 1, "--val-crop": 32}  # fmt: skip

    def train_cli(**changes):
        args = {**flags, **{"--" + k.replace("_", "-"): v for k, v in changes.items()}}
        return main(["train", "--no-progress", *[str(a) for kv in args.items() for a in kv]])

    assert train_cli(stop_after=1) == 0
    capsys.readouterr()
    last = tmp_path / "run" / "last.pt"
    for flag, value, stored in (("crop", 48, 32), ("batch", 4, 2)):
        assert train_cli(resume="auto", **{flag: value}) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{flag}={value} (the run has {stored})" in err, err
        assert load_file(last)["step"] == 1
    # settings of this invocation change freely; a new length is applied, and said
    assert train_cli(resume="auto", steps=3, log_every=2, backend="cpu" if "cpu" in backends.available_backends() else "reference") == 0
    assert "steps 3 (the run had 2 steps)" in capsys.readouterr().out
    assert load_file(last)["step"] == 3 and load_file(last)["train"]["crop"] == 32


def test_no_progress_prints_the_log_and_the_resume_hint(tmp_path, capsys):
    # with --no-progress, training printed nothing at all, and --stop-after ended without a word
    run(tmp_path, steps=4, stop_after=2, log_every=1)  # progress=False
    out = capsys.readouterr().out
    log = (tmp_path / "run" / "train.log").read_text()
    assert out.startswith("# inik-fast") and all(line in out for line in log.splitlines())
    assert "step 1/4 loss" in out and "step 2/4 loss" in out
    hint = f"stopped after step 2 of 4; to continue, run the same command with --resume (it reads {tmp_path / 'run' / 'last.pt'})"
    assert hint in out and hint in log


def test_resume_refuses_unusable_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not an inik-fast training checkpoint; cannot resume from it"):
        run(tmp_path, resume=str(DEFAULT_WEIGHTS))
    state = load_file(run(tmp_path, "first", steps=2)["checkpoint"])
    del state["rng"], state["scaler"]
    atomic_save(state, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match=r"damaged training checkpoint \(no scaler, rng\); cannot resume"):
        run(tmp_path, resume=str(tmp_path / "damaged.pt"))


def test_gradient_accumulation_matches_the_larger_batch(tmp_path):
    big = run(tmp_path, "big", steps=2, batch=2)
    acc = run(tmp_path, "acc", steps=2, batch=1, accum=2)
    assert np.allclose(big["losses"], acc["losses"], rtol=1e-5)
    assert gradient_rel_diff(acc["checkpoint"], big["checkpoint"]) < 1e-4


def test_fused_backend_follows_the_reference(tmp_path):
    reasons = backends.not_supported_reasons("cpu", "cpu", torch.float32)
    if reasons:
        pytest.skip(f"the cpu backend is unavailable: {'; '.join(reasons)}")
    ref = run(tmp_path, "ref", steps=5, backend="reference")
    fused = run(tmp_path, "fused", steps=5, backend="cpu")
    assert np.allclose(fused["losses"], ref["losses"], rtol=1e-3)
    assert ref["losses"][-1] != ref["losses"][0]


def test_amp_bf16_and_folder_dataset_with_epochs(tmp_path):
    from inik_fast.data import write_pairs

    write_pairs(tmp_path / "pairs", 3, crop=48, seed=0)
    res = run(tmp_path, dataset="pairs", data=str(tmp_path / "pairs"), val_data=str(tmp_path / "pairs"), steps=None, epochs=2, batch=2, amp="bf16")
    assert res["step"] == 3 and np.isfinite(res["losses"]).all()  # ceil(2 epochs x 3 images / batch 2)
    assert res["val"]["input_psnr"] > 10
    with pytest.raises(ValueError, match="epochs"):
        run(tmp_path, steps=None, epochs=1)  # the synthetic stream has no epochs


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_log_header_names_the_backends_that_ran(tmp_path, monkeypatch, amp):
    """The cpu op takes float32 and float64 only, so under CPU bf16 autocast "auto" runs the
    reference inverse-kernel conv (the atom bank stays float32): the header said "backend cpu"."""
    from inik_fast import ops

    ran = {"ikconv": set(), "atom_bank": set()}
    real = ops._op
    monkeypatch.setattr(ops, "_op", lambda kind, backend: ran[kind].add(backend) or real(kind, backend))
    run(tmp_path, steps=1, amp=amp, backend="auto", device="cpu")
    header = (tmp_path / "run" / "train.log").read_text().splitlines()[0]
    (conv,), (bank,) = ran["ikconv"], ran["atom_bank"]
    assert re.search(r"backend (\w+)", header).group(1) == conv, header
    assert (bank == conv) == ("atom bank" not in header) and (bank == conv or f"atom bank {bank}" in header), header


def test_torchrun_two_cpu_processes_match_one(tmp_path):
    """DDP on 2 CPU processes (gloo), batch 1 each, equals one process with batch 2."""
    single = run(tmp_path, "single", steps=2, batch=2)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "inik_fast", "train",
           "--model-config", str(tmp_path / "tiny.json"), "--steps", "2", "--crop", "32", "--batch", "1", "--backend", "reference",
           "--out", str(tmp_path / "ddp"), "--ckpt-every", "2", "--val-count", "1", "--val-crop", "32", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world 2" in (tmp_path / "ddp" / "train.log").read_text()
    assert gradient_rel_diff(tmp_path / "ddp" / "last.pt", single["checkpoint"]) < 1e-4
