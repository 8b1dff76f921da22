"""Packaging: licence, version, typing marker, changelog, and the weights file's account of how
it was trained."""
import json
import re
import subprocess
import sys
from pathlib import Path

import torch

import inik_fast
from inik_fast import INIKNet, INIKNetConfig, checkpoint, train
from inik_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "inik_fast" / "weights"


def project_field(name: str) -> str:
    """A top-level [project] entry of pyproject.toml, as written (tomllib needs Python 3.11)."""
    return re.search(rf'^{name} = (.+)$', (ROOT / "pyproject.toml").read_text(), flags=re.M).group(1)


def test_licence_covers_the_code_and_the_weights():
    assert project_field("license") == '"MIT"' and project_field("license-files") == '["LICENSE"]'
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "inik_fast/weights" in text


def test_version_everywhere(capsys):
    version = project_field("version").strip('"')
    assert inik_fast.__version__ == version
    proc = subprocess.run([sys.executable, "-m", "inik_fast", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"inik-fast {version}"
    assert re.search(rf"^## {re.escape(version)}\b", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)


def test_typed_package():
    assert (ROOT / "inik_fast" / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "setup.py").read_text()  # packaged, as PEP 561 asks


def test_bundled_weights_say_how_they_were_trained():
    meta = checkpoint.load_file(WEIGHTS / "default.pt")["meta"]
    log = (WEIGHTS / "default.log").read_text().splitlines()
    # a resumed run logs its settings again, the invocation's (resume, threads, ...) among them
    config = [json.loads(line[len("# config ") :]) for line in log if line.startswith("# config ")][-1]
    run = lambda c: {k: v for k, v in c.items() if k not in train._INVOCATION}  # noqa: E731
    steps = int(re.search(r"--steps (\d+)", (ROOT / "scripts" / "train_default.sh").read_text()).group(1))
    assert run(meta["train"]) == run(config) and meta["step"] == config["steps"] == steps  # the recipe's run
    assert f"done: {meta['step']} steps" in log[-1]
    report = json.loads((WEIGHTS / "default_eval.json").read_text())
    assert meta["eval"] == checkpoint.eval_summary(report)
    assert meta["eval"]["psnr_gain"] == report["mean"]["psnr_gain"] and meta["eval"]["images"] == len(report["images"])


def test_export_counts_parameters_and_records_the_training(tmp_path, capsys):
    """export reported 1,976,857 parameters for the release config (the shared w0 counted twice)."""
    torch.manual_seed(0)
    cfg = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=3, max_kernel_size=5)
    model = INIKNet(cfg)
    train_ckpt = {"format": checkpoint.TRAIN_FORMAT, "config": cfg.to_dict(), "model": model.state_dict(), "step": 7, "train": {"crop": 32, "steps": 7}}
    torch.save(train_ckpt, tmp_path / "last.pt")
    report = {"dataset": "synthetic", "split": "test", "backend": "cpu", "images": [{}, {}],
              "mean": {"input": {"psnr": 20.0, "ssim": 0.5}, "output": {"psnr": 21.5, "ssim": 0.6}, "psnr_gain": 1.5}}  # fmt: skip
    (tmp_path / "eval.json").write_text(json.dumps(report))
    assert main(["export", str(tmp_path / "last.pt"), str(tmp_path / "w.pt"), "--eval-json", str(tmp_path / "eval.json")]) == 0
    n = sum(p.numel() for p in model.parameters())
    assert sum(v.numel() for v in model.state_dict().values()) != n  # the test can tell the two counts apart
    assert f"{n} parameters" in capsys.readouterr().out
    meta = checkpoint.load_file(tmp_path / "w.pt")["meta"]
    assert meta["source"] == "last.pt" and meta["step"] == 7 and meta["train"] == train_ckpt["train"]
    assert meta["eval"] == checkpoint.eval_summary(report) and meta["eval"]["psnr_out"] == 21.5
