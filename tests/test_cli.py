"""The `inik-fast` command line: every command, checkpoint layouts, and one-line errors."""
import collections
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import inik_fast
from inik_fast import INIKNet, INIKNetConfig, checkpoint
from inik_fast import model as model_module
from inik_fast.cli import build_parser, main, train_config_from_args
from inik_fast.data import read_image, write_image
from inik_fast.deblur import deblur
from test_compile import SIZE as COMPILE_SIZE
from test_compile import SMALL as COMPILE_CONFIG

ROOT = Path(__file__).resolve().parents[1]
TINY = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=2, max_kernel_size=5)


@pytest.fixture(scope="module")
def release_ckpt(tmp_path_factory):
    """A tiny model saved as the release saves it: a plain state dict."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "INIKNet.pth"
    torch.save(INIKNet(TINY).state_dict(), path)
    return path


def cli(*args):
    return main([str(a) for a in args])


def test_info(capsys):
    assert cli("info") == 0
    assert "reference  available" in capsys.readouterr().out


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_reader_that_leaves_ends_the_command_quietly(unbuffered):
    """`inik-fast info | head -1`: the closed pipe ends the process as SIGPIPE would, without a
    traceback, whether stdout is flushed at exit (buffered) or at each print (PYTHONUNBUFFERED)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | ({"PYTHONUNBUFFERED": "1"} if unbuffered else {})
    proc = subprocess.Popen([sys.executable, "-m", "inik_fast", "info"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before it prints: importing torch takes seconds
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == b""


def test_release_checkpoint_layouts_load(tmp_path, release_ckpt):
    sd = torch.load(release_ckpt, weights_only=True)
    torch.save({"state_dict": sd}, tmp_path / "wrapped.pth")
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, tmp_path / "dataparallel.pth")
    torch.save({"format": checkpoint.TRAIN_FORMAT, "config": TINY.to_dict(), "model": sd, "step": 3}, tmp_path / "ours.pt")
    x = torch.rand(1, 3, 32, 32)
    outs = []
    for path in (release_ckpt, tmp_path / "wrapped.pth", tmp_path / "dataparallel.pth", tmp_path / "ours.pt"):
        m = checkpoint.load_model(path, backend="reference")
        assert m.config == TINY and not m.training
        with torch.no_grad():
            outs.append(m(x)[-1])
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert checkpoint.infer_config(INIKNet(INIKNetConfig()).state_dict()) == INIKNetConfig()  # the release config


def test_synth_eval_deblur_export(tmp_path, release_ckpt, capsys):
    assert cli("synth", tmp_path / "pairs", "--count", 2, "--crop", 48) == 0
    assert cli("eval", "--dataset", "pairs", "--data", tmp_path / "pairs", "--checkpoint", release_ckpt, "--backend", "reference", "--json", tmp_path / "r.json") == 0
    out = capsys.readouterr().out
    assert "PSNR in" in out and "mean of 2" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["images"]) == 2 and {"psnr", "ssim"} <= set(report["mean"]["output"]) and "psnr_gain" in report["mean"]

    src = tmp_path / "pairs" / "blurry"
    write_image(src / "deep.png", read_image(src / "00000.png")[0], bits=16)
    assert cli("deblur", src, "-o", tmp_path / "out", "--checkpoint", release_ckpt, "--backend", "reference", "--format", "tiff") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.tiff", "00001.tiff", "deep.tiff"]
    assert read_image(tmp_path / "out" / "deep.tiff")[1] == 16 and read_image(tmp_path / "out" / "00000.tiff")[1] == 8
    assert cli("deblur", src / "00000.png", "-o", tmp_path / "one.jpg", "--checkpoint", release_ckpt, "--tile", 32) == 0
    assert read_image(tmp_path / "one.jpg")[0].shape == (48, 48, 3)

    assert cli("export", release_ckpt, tmp_path / "w16.pt") == 0
    w = checkpoint.load_file(tmp_path / "w16.pt")
    assert w["format"] == checkpoint.WEIGHTS_FORMAT and all(v.dtype == torch.float16 for v in w["model"].values())
    assert (tmp_path / "w16.pt").stat().st_size < 0.6 * release_ckpt.stat().st_size
    assert cli("deblur", src / "00001.png", "-o", tmp_path / "h.png", "--checkpoint", tmp_path / "w16.pt") == 0


# (input extension, bit depth): every format deblur reads and writes, at each depth it stores
FORMATS = [(".png", 8), (".png", 16), (".tif", 8), (".tif", 16), (".tiff", 16), (".jpg", 8), (".jpeg", 8), (".webp", 8), (".bmp", 8)]


@pytest.mark.parametrize("ext,bits", FORMATS)
def test_deblur_keeps_format_and_bit_depth(tmp_path, release_ckpt, ext, bits):
    """A file in gives a file of the same format and depth out, holding the model's output."""
    # 16-bit PNG failed ("invalid data shape, strides, or dtype"): only TIFF had been tested
    img = np.random.default_rng(0).random((24, 40, 3)).astype(np.float32)
    write_image(tmp_path / f"in{ext}", img, bits)
    assert cli("deblur", tmp_path / f"in{ext}", "-o", tmp_path / "out", "--checkpoint", release_ckpt) == 0
    got, got_bits = read_image(tmp_path / "out" / f"in{ext}")
    assert got_bits == bits
    model = checkpoint.load_model(release_ckpt)
    expected = deblur(model, torch.from_numpy(read_image(tmp_path / f"in{ext}")[0].transpose(2, 0, 1)))
    err = np.abs(got - expected.numpy().transpose(1, 2, 0))
    if ext in (".jpg", ".jpeg"):  # lossy, on a noise image
        assert err.mean() < 0.05
    else:
        assert err.max() <= 0.5 / (2**bits - 1) + 1e-6


def test_costly_tiling_is_a_one_line_warning(tmp_path, release_ckpt, capsys):
    # --tile 64 on a 256 x 256 image ran 7.6x slower than untiled, without a word
    write_image(tmp_path / "a.png", np.random.default_rng(0).random((64, 64, 3)))
    assert cli("deblur", tmp_path / "a.png", "-o", tmp_path / "b.png", "--checkpoint", release_ckpt, "--tile", 16, "--halo", 32) == 0
    err = without_reports(capsys.readouterr().err)
    assert err.count("\n") == 1 and err.startswith("inik-fast deblur: warning: tiles of 16 px with a 32 px halo compute"), err
    assert cli("deblur", tmp_path / "a.png", "-o", tmp_path / "c.png", "--checkpoint", release_ckpt, "--tile", 32, "--halo", 16) == 0
    assert without_reports(capsys.readouterr().err) == ""


REPORT = re.compile(r"inik-fast deblur: (.+): (\d+\.\d\d) s, peak memory (\d+ MiB|\d+\.\d\d GiB) \(process RSS\)\n")


def without_reports(err: str) -> str:
    """stderr without deblur's line of time and peak memory per image."""
    return REPORT.sub("", err)


def bad_inputs(tmp_path, good_ckpt):
    """name -> (deblur arguments, expected message), each with its own output path."""
    from test_data import png_header_only

    write_image(tmp_path / "ok.png", np.random.default_rng(0).random((40, 40, 3)))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "bomb.png").write_bytes(png_header_only(50_000, 50_000))
    ck = good_ckpt.read_bytes()
    (tmp_path / "cut.pt").write_bytes(ck[: len(ck) // 2])
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "foreign.pt")
    mangled = torch.load(good_ckpt, weights_only=True)
    mangled["scale_select.weight"] = torch.zeros(0, 1, 1, 1)  # no groups: no valid config
    torch.save(mangled, tmp_path / "mangled.pt")
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps({"model": Path("x")}, protocol=2))
    torch.save({"format": checkpoint.WEIGHTS_FORMAT, "config": TINY.to_dict(), "model": {"sum.bias": torch.zeros(3)}}, tmp_path / "partial.pt")
    img = [tmp_path / "ok.png", "--checkpoint", good_ckpt]
    return {
        "not an image": ([tmp_path / "text.jpg", "--checkpoint", good_ckpt], "not an image"),
        "truncated image": ([tmp_path / "cut.png", "--checkpoint", good_ckpt], "cannot decode"),
        "decompression bomb": ([tmp_path / "bomb.png", "--checkpoint", good_ckpt], "decompression bomb"),
        "missing input": ([tmp_path / "nope.png", "--checkpoint", good_ckpt], "no such file"),
        "truncated checkpoint": (img[:1] + ["--checkpoint", tmp_path / "cut.pt"], "cannot be loaded"),
        "foreign checkpoint": (img[:1] + ["--checkpoint", tmp_path / "foreign.pt"], "not an INIKNet checkpoint"),
        "mangled shapes": (img[:1] + ["--checkpoint", tmp_path / "mangled.pt"], "its tensor shapes give no valid config"),
        "pickled objects": (img[:1] + ["--checkpoint", tmp_path / "pickle.pt"], "cannot be loaded"),
        "incomplete weights": (img[:1] + ["--checkpoint", tmp_path / "partial.pt"], "does not match INIKNet"),
        "unknown backend": (img + ["--backend", "fpga"], "backend='fpga'"),
        "zero tile": (img + ["--tile", 0], "--tile 0: expected"),
        "negative halo": (img + ["--tile", 32, "--halo", -1], "--halo -1: expected"),
        "unknown precision": (img + ["--precision", "fp8"], "--precision fp8: expected one of fp32, bf16, fp16"),
        "fp16 on the CPU": (img + ["--precision", "fp16", "--device", "cpu"], "--precision fp16: runs on a CUDA device only"),
        "zero threads": (img + ["--threads", 0], "--threads 0: expected an integer >= 1"),
        "not a size": (img + ["--max-memory", "lots"], "--max-memory lots: expected a size > 0 such as 4GiB"),
        "too small a budget": (img + ["--max-memory", "1MB"], "--max-memory 1 MiB: too little for a 40x40 image with a 96 px halo"),
        "budget and tile": (img + ["--max-memory", "4GiB", "--tile", 32], "--max-memory 4GiB with --tile 32: give one"),
    }


def test_bad_input_gives_one_line_and_no_output(tmp_path, release_ckpt, capsys):
    for name, (args, message) in bad_inputs(tmp_path, release_ckpt).items():
        out = tmp_path / f"out_{name.replace(' ', '_')}.png"
        assert cli("deblur", *args, "-o", out) == 1, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("inik-fast deblur: error:") and message in err, (name, err)
        assert not out.exists() and not list(tmp_path.glob(f".{out.name}*")), name


def test_bad_input_without_traceback_in_a_process(tmp_path, release_ckpt):
    (tmp_path / "text.png").write_text("hello")
    cmd = [sys.executable, "-m", "inik_fast", "deblur", str(tmp_path / "text.png"), "-o", str(tmp_path / "o.png"), "--checkpoint", str(release_ckpt)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "not an image" in proc.stderr and not (tmp_path / "o.png").exists()


def test_user_errors_of_every_kind_are_one_line(tmp_path, release_ckpt, capsys):
    """Perceptual weights, settings and output paths: each a one-line error, exit status 1."""
    write_image(tmp_path / "a.png", np.zeros((16, 16, 3)))
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "free.json").write_text(json.dumps(dict(TINY.to_dict(), atoms="free")))
    cases = [
        (("eval", "--count", 1, "--checkpoint", release_ckpt, "--perceptual-weights", tmp_path / "none"), "not a folder"),
        (("train", "--model-config", tmp_path / "free.json", "--backend", "release", "--steps", 1, "--out", tmp_path / "r"),
         "needs atoms='inr'"),
        (("deblur", tmp_path / "a.png", "-o", tmp_path / "file" / "b.png", "--checkpoint", release_ckpt), "cannot write"),
    ]
    for args, message in cases:
        assert cli(*args) == 1, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ": error: " in err and message in err, (args, err)


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: an illegal memory access"), ImportError("no module x"),
                                   ValueError("ikconv: weight must be [O, G, C, M]")], ids=type)
def test_unexpected_errors_keep_their_traceback_and_exit_2(tmp_path, release_ckpt, capsys, monkeypatch, error):
    """A kernel failure or an internal bug is not bad input: no one-line "error:", exit status 2."""
    import inik_fast.deblur

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(inik_fast.deblur, "deblur", fail)
    write_image(tmp_path / "a.png", np.zeros((16, 16, 3)))
    assert cli("deblur", tmp_path / "a.png", "-o", tmp_path / "b.png", "--checkpoint", release_ckpt) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and f"{type(error).__name__}: {error}" in err
    assert "internal error" in err and ": error: " not in err


def test_missing_default_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint, "DEFAULT_WEIGHTS", tmp_path / "default.pt")
    write_image(tmp_path / "a.png", np.zeros((16, 16, 3)))
    assert cli("deblur", tmp_path / "a.png", "-o", tmp_path / "b.png") == 1
    err = capsys.readouterr().err
    assert "default checkpoint" in err and "is missing" in err and "scripts/train_default.sh" in err
    proc = subprocess.run([sys.executable, "scripts/demo.py", "--checkpoint", str(tmp_path / "default.pt"), "--out", str(tmp_path / "demo.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "is missing" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "demo.png").exists()


def test_train_flags_override_the_config_file(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"steps": 10, "crop": 64, "lr": 1e-3}))
    TINY.to_json(tmp_path / "m.json")
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "t.json"), "--model-config", str(tmp_path / "m.json"), "--crop", "32", "--amp", "bf16"])
    cfg = train_config_from_args(args)
    assert (cfg.steps, cfg.crop, cfg.lr, cfg.amp, cfg.batch) == (10, 32, 1e-3, "bf16", 4)
    assert INIKNetConfig.from_dict(cfg.model) == TINY
    (tmp_path / "bad.json").write_text(json.dumps({"stepz": 1}))
    assert cli("train", "--config", tmp_path / "bad.json") == 1


@pytest.mark.parametrize("settings,message", [([1, 2], "expected a JSON object"), ({"steps": "10"}, "steps='10': expected int | None")])
def test_train_config_file_of_the_wrong_shape_is_a_one_line_error(tmp_path, capsys, settings, message):
    (tmp_path / "t.json").write_text(json.dumps(settings))  # these raised AttributeError / TypeError
    assert cli("train", "--config", tmp_path / "t.json", "--out", tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("inik-fast train: error:") and message in err, err
    assert not (tmp_path / "run").exists()


def test_eval_and_synth_refuse_empty_counts(tmp_path, release_ckpt, capsys):
    # eval --limit 0 raised IndexError; synth --count 0 wrote empty folders and reported success
    assert cli("eval", "--count", 1, "--limit", 0, "--checkpoint", release_ckpt) == 1
    assert "--limit 0: expected an integer >= 1" in capsys.readouterr().err
    assert cli("synth", tmp_path / "p", "--count", 0) == 1
    assert "count=0: expected at least 1 pair" in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_a_data_folder_needs_its_layout_named(tmp_path, release_ckpt, capsys):
    # eval --data DIR without --dataset evaluated the synthetic set and ignored DIR (train too)
    assert cli("synth", tmp_path / "pairs", "--count", 1, "--crop", 32) == 0
    capsys.readouterr()
    for args in (["eval", "--count", 1, "--checkpoint", release_ckpt, "--backend", "reference"],
                 ["train", "--steps", 1, "--crop", 32, "--out", tmp_path / "run"]):  # fmt: skip
        assert cli(*args, "--data", tmp_path / "pairs") == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(tmp_path / "pairs") in err and "--dataset (cuhk, dpdd" in err, err
    assert not (tmp_path / "run").exists()


def test_release_baseline_is_a_backend_choice_of_deblur(tmp_path, release_ckpt):
    write_image(tmp_path / "a.png", np.random.default_rng(0).random((40, 40, 3)))
    for backend in ("reference", "release"):
        args = ("deblur", tmp_path / "a.png", "-o", tmp_path / f"{backend}.tiff", "--checkpoint", release_ckpt)
        assert cli(*args, "--backend", backend) == 0
    reference, release = (read_image(tmp_path / f"{b}.tiff")[0] for b in ("reference", "release"))
    assert np.abs(reference - release).max() <= 1 / 255  # the same model; 8-bit rounding apart


def _bench_rows(out: str) -> dict:
    """{(workload, backend): [median ms, release median ms, ratio, rounds]} of `inik-fast bench`'s table."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()[3:] if line.startswith("|")]
    return {(r[0], r[1]): r[2:] for r in rows}


def test_bench_times_the_benchmark_workloads_beside_the_release(capsys):
    args = ("--sizes", "tiny", "--workloads", "ikconv_forward", "atom_bank", "--backends", "release", "reference", "cpu")
    assert cli("bench", *args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == "| workload | backend | median ms | release median ms | ratio | rounds |".split()
    rows = _bench_rows(out)
    workloads = ("ikconv_forward float32 1x24x40", "atom_bank float32 bank")  # the tiny profile's
    assert set(rows) == {(w, b) for w in workloads for b in ("release", "reference", "cpu")}, out
    for (workload, backend), (median, release, ratio, rounds) in rows.items():
        assert rounds == "5" and float(median) > 0, out
        if backend == "release":
            assert release == median and ratio == "1.00x", out
        else:  # to the table's rounding
            assert float(ratio[:-1]) == pytest.approx(float(release) / float(median), rel=0.02, abs=0.01), out


def test_bench_ratio_is_the_release_median_over_the_median_of_the_same_rounds(monkeypatch, capsys):
    """Fake steps and timings: every round times the release, then the backend; the ratio is of
    those rounds' medians, not of the release's own entry."""
    from inik_fast.benchmarking import measure, workloads

    log = []

    def fake_steps(case):
        def step(who):
            return lambda i: log.append((case.backend, who))

        return workloads.Steps(step(case.backend), None if case.backend == "release" else step("release"), 1)

    seconds = {  # (case, step): the first call alone, then the timed rounds
        ("release", "release"): [9.0, 0.1, 0.1, 0.1, 0.1, 0.1],
        ("cpu", "cpu"): [9.0, 0.004, 0.001, 0.003, 0.005, 0.002],  # median 3 ms
        ("cpu", "release"): [0.02, 0.06, 0.04, 0.01, 0.05],  # median 40 ms
    }
    done = collections.Counter()

    def fake_seconds(fn, device):
        fn()
        done[log[-1]] += 1
        return seconds[log[-1]][done[log[-1]] - 1]

    monkeypatch.setattr(workloads, "steps", fake_steps)
    monkeypatch.setattr(measure, "seconds", fake_seconds)
    assert cli("bench", "--sizes", "tiny", "--workloads", "atom_bank", "--backends", "release", "cpu") == 0
    rows = _bench_rows(capsys.readouterr().out)
    assert rows[("atom_bank float32 bank", "cpu")] == ["3.000", "40.000", "13.33x", "5"]
    assert rows[("atom_bank float32 bank", "release")] == ["100.000", "100.000", "1.00x", "5"]
    cpu = [who for backend, who in log if backend == "cpu"]
    # the first call (the tiny profile has no warm-up: it is the memory probe too), the release's
    # first call; then release, cpu, release, cpu, ...
    assert cpu == ["cpu", "release"] + ["release", "cpu"] * 5


def test_bench_refuses_unknown_names_in_one_line(capsys):
    backends = ", ".join(["release", *inik_fast.available_backends("cpu")])
    for args, valid in [(("--backends", "cpu", "fast"), f"--backends fast: expected one or more of {backends} (available on cpu)"),
                        (("--workloads", "model"), "--workloads model: expected one or more of ikconv_forward, "
                         "ikconv_train, ikconv_train_dx, atom_bank, model_eval, model_eval_cast, train_step"),
                        (("--rounds", 4), "--rounds 4: expected an integer >= 5"),
                        (("--sizes", "huge"), "--sizes huge: expected one of quick, full, tiny")]:
        assert cli("bench", "--device", "cpu", *args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.rstrip().endswith(valid), err


@pytest.mark.parametrize("command", ["info", "train", "deblur", "eval", "synth", "export", "bench"])
def test_every_command_prints_its_help(command, capsys):
    # `deblur --help` died with "TypeError: %o format" (a bare "25% of" in a help text)
    with pytest.raises(SystemExit) as e:
        cli(command, "--help")
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: inik-fast {command}")


def test_train_help_says_what_is_required(capsys):
    # `train` without --steps said "either steps or epochs (not both)"; every loss flag's help
    # ended with "(the release uses 0.1 for lpips and vgg)"
    with pytest.raises(SystemExit):
        cli("train", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--steps STEPS optimizer steps (required, or --epochs for a folder dataset)" in text
    for name in ("mse", "fft"):
        assert re.search(rf"--{name} {name.upper()} weight of the {name.upper()} term \(default [\d.]+, as the release\)", text), name
    for name in ("lpips", "vgg"):
        assert re.search(rf"--{name} {name.upper()} weight of the {name.upper()} term \(default 0; the release uses 0.1, which needs --perceptual-weights\)", text), name
    assert cli("train", "--out", "/nonexistent/run") == 1
    err = capsys.readouterr().err
    assert "expected either steps or epochs (one is required)" in err and "not both" not in err, err


def test_a_non_checkpoint_file_is_named_for_what_it_is(tmp_path, capsys):
    # a PNG given as --checkpoint "holds Python objects other than tensors"
    write_image(tmp_path / "a.png", np.zeros((8, 8, 3)))
    assert cli("deblur", tmp_path / "a.png", "-o", tmp_path / "b.png", "--checkpoint", tmp_path / "a.png") == 1
    err = capsys.readouterr().err
    assert "not a PyTorch checkpoint (it starts like a PNG image)" in err and "Python objects" not in err, err


def test_synth_refuses_a_folder_that_holds_pairs(tmp_path, capsys):
    # a second synth into the same folder mixed sizes (and overwrote names) silently
    assert cli("synth", tmp_path / "p", "--count", 1, "--crop", 32) == 0
    before = sorted(p.read_bytes() for p in (tmp_path / "p").rglob("*.png"))
    assert cli("synth", tmp_path / "p", "--count", 2, "--crop", 48) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'p' / 'blurry'} already holds images" in err and err.count("\n") == 1, err
    assert sorted(p.read_bytes() for p in (tmp_path / "p").rglob("*.png")) == before


# ----------------------------------------------------------------------------------------------
# deblur: precision, compile, memory budget, progress, report
# ----------------------------------------------------------------------------------------------
def test_deblur_reports_time_and_peak_memory_on_stderr(tmp_path, release_ckpt, capsys):
    write_image(tmp_path / "a.png", np.random.default_rng(0).random((40, 56, 3)))
    assert cli("deblur", tmp_path / "a.png", tmp_path / "a.png", "-o", tmp_path / "out", "--checkpoint", release_ckpt) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(rf"{re.escape(str(tmp_path / 'a.png'))} -> {re.escape(str(tmp_path / 'out' / 'a.png'))} \(56x40, \d+\.\d\d s\)\n", out), out
    reports = REPORT.findall(err)
    assert len(reports) == 1 and reports[0][0] == str(tmp_path / "a.png") and without_reports(err) == "", err


def test_progress_bar_when_asked_or_on_a_terminal(tmp_path, release_ckpt, capsys):
    write_image(tmp_path / "a.png", np.random.default_rng(0).random((64, 64, 3)))
    args = ["deblur", tmp_path / "a.png", "-o", tmp_path / "b.png", "--checkpoint", release_ckpt, "--tile", 32, "--halo", 16]
    assert cli(*args, "--progress") == 0
    assert "4/4" in capsys.readouterr().err  # 2 x 2 tiles
    for flags in ([], ["--no-progress"]):  # stderr is not a terminal here
        assert cli(*args, *flags) == 0
        assert without_reports(capsys.readouterr().err) == "", flags


def test_max_memory_picks_the_tiles(tmp_path, release_ckpt, monkeypatch):
    from inik_fast import memory

    monkeypatch.setattr(memory, "held_bytes", lambda device: 0)  # the budget of the forward alone
    write_image(tmp_path / "a.png", np.random.default_rng(0).random((240, 160, 3)), bits=16)
    model = checkpoint.load_model(release_ckpt)
    budget = memory.forward_bytes(model.config, 160, 160) + memory.TILING_BYTES_PER_PIXEL * 240 * 160
    chosen = memory.choose_tile(model.config, 240, 160, budget, 0, 48)
    assert chosen == 64  # 160 - 2 x 48: tiles of 64 px
    assert cli("deblur", tmp_path / "a.png", "-o", tmp_path / "b.tiff", "--checkpoint", release_ckpt, "--halo", 48, "--max-memory", budget) == 0
    assert cli("deblur", tmp_path / "a.png", "-o", tmp_path / "c.tiff", "--checkpoint", release_ckpt, "--halo", 48, "--tile", chosen) == 0
    assert cli("deblur", tmp_path / "a.png", "-o", tmp_path / "d.tiff", "--checkpoint", release_ckpt) == 0  # fits: untiled
    tiled, by_tile, whole = (read_image(tmp_path / f"{n}.tiff")[0] for n in "bcd")
    assert np.array_equal(tiled, by_tile) and np.abs(tiled - whole).max() < 1e-3


def test_precision_bf16_is_as_close_as_the_reference_in_bf16(tmp_path, release_ckpt):
    write_image(tmp_path / "a.png", np.random.default_rng(0).random((48, 64, 3)), bits=16)
    runs = {"fp32": [], "bf16": ["--precision", "bf16"], "ref_bf16": ["--precision", "bf16", "--backend", "reference"]}
    for name, flags in runs.items():
        assert cli("deblur", tmp_path / "a.png", "-o", tmp_path / f"{name}.tiff", "--checkpoint", release_ckpt, *flags) == 0
    fp32, bf16, ref = (read_image(tmp_path / f"{n}.tiff")[0] for n in runs)
    bound = np.abs(ref - fp32).max()
    assert 0 < np.abs(bf16 - fp32).max() <= 1.5 * bound and bound < 0.05, bound


@pytest.fixture
def aot_eager_compile(monkeypatch):
    """The CLI's --compile plumbing, traced by Dynamo as always, with AOTAutograd's eager compiler
    in place of Inductor, whose C++ takes minutes a graph on 2 cores: Inductor's outputs and
    gradients of this model and size are tests/test_compile.py's."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))


@pytest.mark.slow
def test_compile_equals_eager(tmp_path, capsys, aot_eager_compile):
    """--compile on a tiled run: all four windows are 48 x 48, so one graph serves them all."""
    import torch._dynamo

    torch.manual_seed(0)
    torch.save(INIKNet(COMPILE_CONFIG).state_dict(), tmp_path / "small.pth")
    write_image(tmp_path / "a.png", np.random.default_rng(0).random((64, 64, 3)), bits=16)
    args = ["deblur", tmp_path / "a.png", "--checkpoint", tmp_path / "small.pth", "--backend", "cpu", "--tile", 32, "--halo", COMPILE_SIZE - 32]
    assert cli(*args, "-o", tmp_path / "eager.tiff") == 0
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert cli(*args, "-o", tmp_path / "compiled.tiff", "--compile") == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    eager, compiled = (read_image(tmp_path / f"{n}.tiff")[0] for n in ("eager", "compiled"))
    assert np.abs(eager - compiled).max() < 1e-4


def test_train_compile_is_refused_on_torch_2_11(tmp_path, capsys, monkeypatch):
    """At the start, as a bad option: torch 2.11 compiles this model's backward wrong (the flag is
    forced on here, so that any torch runs the check)."""
    monkeypatch.setattr(model_module, "_COMPILED_BACKWARD_BROKEN", True)
    assert cli("train", "--steps", 1, "--out", tmp_path / "run", "--compile") == 1
    assert "train config compile=True: expected False on torch 2.11" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.skipif(model_module._COMPILED_BACKWARD_BROKEN, reason="torch 2.11: compiled training is refused, see above")
def test_train_compile_follows_eager(tmp_path, capsys, aot_eager_compile):
    import torch._dynamo

    COMPILE_CONFIG.to_json(tmp_path / "small.json")
    args = ["train", "--model-config", tmp_path / "small.json", "--steps", 2, "--crop", COMPILE_SIZE, "--batch", 1, "--backend", "cpu",
            "--val-count", 1, "--val-crop", 32, "--no-progress"]  # fmt: skip
    assert cli(*args, "--out", tmp_path / "eager") == 0
    torch._dynamo.utils.counters.clear()
    assert cli(*args, "--out", tmp_path / "compiled", "--compile") == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    eager, compiled = (checkpoint.load_file(tmp_path / n / "last.pt")["model"] for n in ("eager", "compiled"))
    assert eager.keys() == compiled.keys()  # no torch.compile prefix in the checkpoint
    # Adam turns a rounding-level gradient of either sign into a step of about +-lr, so a few of
    # the 86k elements may differ by up to 2 lr = 4e-4 after two steps; every other one agrees.
    # How many depends on the CPU's kernels: under 1 in 10,000 on a Zen 3 (AVX2), 39 of 86k (0.05%)
    # on a Zen 4 (AVX-512). A wrong compiled gradient moves most elements by about lr.
    diff = torch.cat([(eager[k] - compiled[k]).abs().flatten() for k in eager])
    assert diff.max() < 4.5e-4 and (diff > 1e-5).sum() <= diff.numel() // 1_000, sorted(diff.tolist())[-10:]
