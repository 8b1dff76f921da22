"""The benchmark plumbing: `benchmarks/gpu_check.sh --cpu-dry-run` end to end on this CPU (tiny
sizes, Triton interpreter, one round), and benchmarks/report.py on the JSON that run wrote."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import inik_fast
from inik_fast.benchmarking import measure, workloads

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SUITES = ("ikconv_forward", "ikconv_train", "ikconv_train_dx", "atom_bank", "model_eval", "model_eval_cast", "train_step")


def _bench_module(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    # Not the runner's PYTEST_XDIST_WORKER: pytest-benchmark disables itself under an xdist worker.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")} | {"PYTHON": sys.executable}
    proc = subprocess.run(
        [str(BENCH / "gpu_check.sh"), "--out", str(out), "--cpu-dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=480,  # the dry run's deadline is 420 s
    )
    return proc, out


def _report(args, cwd):
    proc = subprocess.run([sys.executable, str(BENCH / "report.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    return proc


@pytest.mark.slow
def test_dry_run_passes_every_stage_and_writes_its_files(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    for name in ("info", "tests-gpu", "sweep", "bench-ops", "bench-model"):
        assert re.search(rf"^{name} +ok ", summary, re.M), summary
    assert re.search(r"^build +skipped ", summary, re.M), summary
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files  # what comes back from the GPU machine
    assert {"summary.txt", "run.log"} <= set(files), files
    assert len([f for f in files if f.endswith(".md") and not f.startswith("sweep-")]) == 1, files
    assert "=== gpu_check summary" in proc.stdout[-12000:]  # the caller sees the last 12,000 characters
    # the results record the stages before the benchmarks, the GPU tests among them
    stages = json.loads(_results(out).read_text())["gpu_check_stages"]
    assert re.search(r"^tests-gpu +ok ", stages, re.M) and re.search(r"^sweep +ok ", stages, re.M), stages


def _results(out, prefix=""):
    (path,) = [p for p in out.glob(f"{prefix}*.json") if prefix or not p.name.startswith("sweep-")]
    return path


@pytest.mark.slow
def test_sweep_checks_every_variant_against_the_reference(dry_run):
    _, out = dry_run
    result = json.loads(_results(out, "sweep-").read_text())
    timed = [r for r in result["rows"] if "time_ms" in r and r["backend"] != "release"]
    assert {r["backend"] for r in timed} == {"triton"}, result["rows"]  # no CUDA on this machine
    assert {r["variant"] for r in timed} >= {"default", "taps 16", "slab forward"}, timed
    for r in timed:
        assert r["ok"] and 0 <= r["rel_err"] <= r["tol"] <= 1e-3 and r["time_ms"] > 0, r
    assert set(result["best"]) == {f"{r['workload']} | triton" for r in timed}


@pytest.mark.slow
def test_report_tables_from_the_dry_run(dry_run, tmp_path):
    _, out = dry_run
    raw = [_results(out)]  # the merged pytest-benchmark JSON of both suites
    proc = _report([*raw, "--out-dir", tmp_path], ROOT)
    assert proc.returncode == 0, proc.stderr
    md = proc.stdout
    entries = [b for path in raw for b in json.loads(path.read_text())["benchmarks"]]
    assert {b["extra_info"]["suite"] for b in entries} == set(SUITES)
    # the whole model in bf16 autocast too, each beside the release
    assert {b["extra_info"]["dtype"] for b in entries if b["extra_info"]["suite"] == "model_eval"} == {"float32", "bfloat16"}
    for group in {b["group"] for b in entries}:
        mine = [b for b in entries if b["group"] == group]
        suite, dtype = mine[0]["extra_info"]["suite"], mine[0]["extra_info"]["dtype"]
        backends = ["release", *inik_fast.available_backends("cpu", getattr(torch, dtype))]
        assert sorted(b["extra_info"]["backend"] for b in mine) == sorted(backends), group
        table = md.split(f"### {group}\n", 1)[1].split("\n\n###", 1)[0]
        rows = table.strip().splitlines()[2:]  # after the header and the alignment row
        assert [r.split(" | ")[0][2:] for r in rows] == backends, table  # release first, then by backend
        assert rows[0].split(" | ")[3] == "1x", rows[0]  # release against itself
        for b in mine:
            e = b["extra_info"]
            assert e["time_s"] > 0 and e["macs"] > 0 and e["floor_fraction"] > 0 and e["first_call_s"] > 0, e
            # every backend's rounds alternate with the release's
            assert (e["release_paired_s"] is None) == (e["backend"] == "release"), e
            assert e["release_paired_s"] is None or e["release_paired_s"] > 0, e
            # two floors: the op's backward with D stored (2 forwards' work, 3 with dx) or recomputed (3, 4)
            parts = {"ikconv_train": 2 / 3, "ikconv_train_dx": 3 / 4}.get(suite, 1.0)
            assert e["macs_minimal"] == round(parts * e["macs"]), e
            assert e["peak_extra_bytes"] is not None and e["device"], e
    # the merged file is a valid input again and gives the same tables
    merged = sorted(tmp_path.glob("*.json"))
    assert len(merged) == 1 and (tmp_path / f"{merged[0].stem}.md").read_text() == md.rstrip("\n") + "\n"
    again = _report([merged[0], "--no-files"], ROOT)
    assert again.returncode == 0 and again.stdout == md


@pytest.mark.slow
def test_readme_block_from_the_dry_run(dry_run, tmp_path):
    _, out = dry_run
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- cpu-results:begin -->\nold table\n<!-- cpu-results:end -->\noutro\n")
    args = [_results(out), "--sweep", _results(out, "sweep-"), "--readme", readme]
    assert _report(args, ROOT).returncode == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- cpu-results:begin -->\n") and text.endswith("<!-- cpu-results:end -->\noutro\n")
    assert "old table" not in text
    for backend in inik_fast.available_backends("cpu", torch.float32):
        assert re.search(rf"^\| inverse_kernel_conv forward, .* \| float32 \| {backend} \| ", text, re.M), text
    for dtype in ("float32", "bfloat16"):  # the whole model in bf16 autocast too
        assert re.search(rf"^\| INIKNet eval forward, B=1 C=3 32x32, small model .* \| {dtype} \| reference \| ", text, re.M), text
    assert "| triton |" in text.split("the fastest correct variant per workload", 1)[1], text
    readme.write_text("no block\n")
    proc = _report(args, ROOT)
    assert proc.returncode != 0 and "no <!-- cpu-results:begin --> ... <!-- cpu-results:end --> block" in proc.stderr


@pytest.mark.parametrize("device,marker", [("cuda", "gpu-results"), ("cpu", "cpu-results")])
def test_readme_results_block_is_generated_from_the_committed_results(device, marker):
    """The README's GPU and CPU tables are report.py's summaries of the newest committed results
    file of that device (and the sweep of the same run), so no number there lacks a recorded run."""
    report = _bench_module("report")
    block = (ROOT / "README.md").read_text().split(f"<!-- {marker}:begin -->\n", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]
    runs = [report.load([p]) for p in sorted((BENCH / "results").glob("*.json")) if not p.name.startswith("sweep-")]
    found = [data for run in runs for data in run.values() if data["machine_info"]["inik_fast"]["device"] == device]
    if not found:
        assert block == ""
        return
    # the newest; of one day's runs on different machines, the fuller one
    data = max(found, key=lambda d: (d["machine_info"]["inik_fast"]["date"], len(d["benchmarks"])))
    info = data["machine_info"]["inik_fast"]
    sweep_path = BENCH / "results" / f"sweep-{report.slug(info['device_name'])}-{info['date']}.json"
    sweep = json.loads(sweep_path.read_text()) if sweep_path.exists() else None
    assert block == report.summary(data, sweep)


def test_report_refuses_json_of_other_suites(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": []}))
    proc = _report([path, "--no-files"], ROOT)
    assert proc.returncode != 0 and "no machine_info.inik_fast" in proc.stderr


def test_floor_counts_match_the_contract():
    floor = _bench_module("floor")
    assert floor.window_taps(7) == 679
    per_pixel = floor.ikconv_macs(1, 3, 1, 1, 7, 10, 3)
    assert per_pixel == 20_370 + 630  # OPS.md: 20,370 MACs for D plus the mixing
    assert floor.ikconv_macs(2, 3, 4, 5, 7, 10, 3) == 40 * per_pixel
    assert floor.ikconv_macs(1, 3, 1, 1, 7, 10, 3, backward=True) == 2 * per_pixel
    assert floor.ikconv_macs(1, 3, 1, 1, 7, 10, 3, backward=True, need_x_grad=True) == 3 * per_pixel
    peak, source = floor.peak_fma("cpu")
    assert peak > 0 and "fma_peak.c" in source and "threads" in source


def test_the_whole_model_is_benchmarked_in_fp32_and_bf16_at_the_project_sizes():
    """Eval at 512^2 on the CPU (and 1024^2 in float32, the size of deblur's CPU goal) and
    1120x1680 (a DPDD image) on the GPU, the training step at the release's batch (B=4, 256^2);
    float32 and bf16 autocast, each beside the release; eval of the model cast to bf16 (deblur
    --precision bf16) too."""
    f32, bf16, profiles = torch.float32, torch.bfloat16, workloads.PROFILES
    assert set(profiles["cpu"].model_eval) == {(1, 512, 512, f32), (1, 1024, 1024, f32), (1, 512, 512, bf16)}
    assert set(profiles["cuda"].model_eval) == {(1, 1120, 1680, f32), (1, 1120, 1680, bf16)}
    assert set(profiles["cpu"].model_eval_cast) == {(1, 512, 512, bf16)}
    assert set(profiles["cuda"].model_eval_cast) == {(1, 1120, 1680, bf16)}
    for device in ("cpu", "cuda"):
        assert set(profiles[device].train_step) == {(4, 256, 256, f32), (4, 256, 256, bf16)}
    script = (BENCH / "gpu_check.sh").read_text()  # the GPU run: the cuda profile of bench_model.py
    assert "BENCH_ARGS=(--bench-device cuda --bench-size full)" in script and "bench bench-model " in script


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_cpu_peak_memory_counts_every_page_a_call_touches():
    """24 MiB lies below glibc's largest mmap threshold: after the first call its block stays in
    the heap, resident, unless malloc_trim hands it back; each call must still count it."""
    n = 24 * 2**20
    for _ in range(3):
        peak, _ = measure.peak_extra_bytes(lambda: torch.ones(n // 4), "cpu")
        assert n <= peak < n + 8 * 2**20, peak / 2**20
