"""Turns pytest-benchmark JSON files of the inik_fast suites into the README's markdown tables.

    python benchmarks/report.py benchmarks/results/last-run.json [more.json ...] [--out-dir DIR]
    python benchmarks/report.py RESULTS.json --readme README.md [--sweep SWEEP.json]

Per machine found in the inputs it writes DIR/<machine>-<date>.json (its benchmarks merged, in
pytest-benchmark's format, so the file is a valid input again) and DIR/<machine>-<date>.md, and
prints the markdown of every machine. Per benchmark group: each backend's median time, its
speed-up over "release" measured in the same run, its peak extra memory and the ratio to the
release's, the achieved GFLOP/s and the fraction of the device's floor.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

BACKEND_ORDER = ("release", "reference", "cpu", "triton", "cuda")
RESULTS = Path(__file__).resolve().parent / "results"


def load(paths) -> dict:
    """{machine name: merged pytest-benchmark dict} over all files; a rerun replaces an entry."""
    machines: dict = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        info = data.get("machine_info", {}).get("inik_fast")
        if info is None:
            raise SystemExit(f"{path}: no machine_info.inik_fast; expected a JSON written by the benchmarks/ suites")
        merged = machines.setdefault(info["device_name"], {**data, "benchmarks": []})
        if data.get("datetime", "") >= merged.get("datetime", ""):
            merged.update({k: v for k, v in data.items() if k != "benchmarks"})
        names = {b["fullname"] for b in data["benchmarks"]}
        merged["benchmarks"] = [b for b in merged["benchmarks"] if b["fullname"] not in names] + data["benchmarks"]
    return machines


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


# The widest vector unit names a CPU's file: the same model name comes with AVX2 on one day and
# AVX-512 on another, and a day's runs on both must not overwrite each other.
ISA_TAGS = (("amx_tile", "AMX"), ("avx512f", "AVX512"), ("avx2", "AVX2"))


def stem(data: dict) -> str:
    info = data["machine_info"]["inik_fast"]
    flags = (info.get("cpu_flags") or []) if info.get("device") != "cuda" else []
    isa = next((f"-{tag}" for flag, tag in ISA_TAGS if flag in flags), "")
    return f"{slug(info['device_name'])}{isa}-{info['date']}"


def fmt_time(s) -> str:
    if s is None:
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_bytes(n) -> str:
    if n is None:
        return "n/a"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def ratio(num, den, suffix="x") -> str:
    return f"{num / den:.3g}{suffix}" if num is not None and den else "n/a"


def _order(b) -> tuple:
    backend = b["extra_info"].get("backend", "")
    return (BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else len(BACKEND_ORDER), backend)


def speedup(e: dict, release: dict) -> str:
    """The release's time over this entry's: from the rounds interleaved with it where recorded
    (release_paired_s), else from the release's own entry of the run."""
    return ratio(e.get("release_paired_s") or release.get("time_s"), e.get("time_s"))


def floors(e: dict) -> str:
    """Fraction of the floor: the minimal work (the op's backward with D stored) / the design's own
    (D recomputed), one number where they agree."""
    design, minimal = e.get("floor_fraction"), e.get("floor_fraction_minimal", e.get("floor_fraction"))
    if design is None:
        return "n/a"
    if abs(minimal - design) <= 1e-12 * design:
        return f"{100 * design:.3g}%"
    return f"{100 * minimal:.3g}% / {100 * design:.3g}%"


def group_table(entries: list) -> list[str]:
    release = next((b["extra_info"] for b in entries if b["extra_info"].get("backend") == "release"), {})
    lines = [
        "| backend | median | first call | speed-up vs release | peak extra memory | memory / release | GFLOP/s | floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in sorted(entries, key=_order):
        e = b["extra_info"]
        t = e.get("time_s", b["stats"]["median"])
        lines.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} |".format(
                e.get("backend", b["name"]),
                fmt_time(t),
                fmt_time(e.get("first_call_s")),
                "1x" if e is release else speedup(e, release),
                fmt_bytes(e.get("peak_extra_bytes")),
                ratio(e.get("peak_extra_bytes"), release.get("peak_extra_bytes"), ""),
                f"{e['gflops']:.3g}" if e.get("gflops") is not None else "n/a",
                floors(e),
            )
        )
    return lines


def groups(data: dict) -> list:
    """(group name, its benchmarks) in the suites' own order (ops, then model), then by name."""
    found: dict = {}
    for b in data["benchmarks"]:
        found.setdefault(b.get("group") or b["name"], []).append(b)
    return sorted(found.items(), key=lambda kv: (kv[1][0]["extra_info"].get("suite_rank", 0), kv[0]))


def markdown(data: dict) -> str:
    info, commit = data["machine_info"]["inik_fast"], data.get("commit_info", {})
    gpu = info["device"] == "cuda"
    versions = f"torch {info['torch']}" + (f", CUDA {info['cuda']}" if info.get("cuda") else "")
    versions += f", triton {info['triton']}" if info.get("triton") else ""
    rev = (commit.get("id") or "?")[:10] + (" (uncommitted changes)" if commit.get("dirty") else "")
    peak = f"{info['peak_fma_per_s'] / 1e9:.4g} GFMA/s" if info.get("peak_fma_per_s") else "unknown"
    out = [
        f"## {info['device_name']} ({info['date']})",
        "",
        f"- Machine: {info['device_name']}" + (f"; host CPU {info['cpu']}, {info['cores']} cores" if gpu else "")
        + (f"; CPU flags: {' '.join(info['cpu_flags'])}" if info.get("cpu_flags") is not None else ""),
        f"- Software: {versions}; commit {rev}; size profile `{info['profile']}`; backends: {', '.join(info['backends'])}",
        f"- Peak fp32 FMA rate for the floor: {peak} ({info['peak_source']})",
        f"- TF32: {info.get('allow_tf32', 'not recorded')} (off: float32 entries, the release's included, compute in float32)",
        "- Median: " + ("the CUDA-event median of the timed rounds" if gpu else "the wall-clock median of the timed rounds")
        + "; first call = the first call alone (compilation, autotuning, cold caches); speed-up = release median / this"
        + " median, from rounds that alternate with the release's on the same inputs where recorded, else from the"
        + " release's own entry of the run; memory = peak extra memory of one call"
        + (" (CUDA caching allocator)" if gpu else " (peak resident set above the one before the call)")
        + "; floor = time at the peak FMA rate for the work's MACs / median, for the minimal work (the op's backward"
        + " with D stored) / the design's own (D recomputed), one number where they agree.",
    ]
    for name, entries in groups(data):
        out += ["", f"### {name}", ""] + group_table(entries)
    if data.get("gpu_check_stages"):
        out += ["", "### Stages of the gpu_check.sh run (tests, sweep, profile)", "", "```", data["gpu_check_stages"].rstrip(), "```"]
    return "\n".join(out) + "\n"


def summary(data: dict, sweep: dict | None = None) -> str:
    """The README's table of one results file: every fused backend of every workload, against the
    release of the same run; with a sweep file, the fastest correct kernel variant per workload."""
    info = data["machine_info"]["inik_fast"]
    flags = f", flags {' '.join(info['cpu_flags'])}" if info.get("cpu_flags") is not None and info["device"] == "cpu" else ""
    lines = [
        f"{info['device_name']}{flags}, torch {info['torch']}, triton {info.get('triton')}, {info['date']} "
        f"(`benchmarks/results/{stem(data)}.md`; TF32 off):",
        "",
        "| workload | dtype | backend | median | speed-up vs release | peak extra memory (÷ release) | floor (minimal / design) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, entries in groups(data):
        release = next((b["extra_info"] for b in entries if b["extra_info"].get("backend") == "release"), {})
        title, dtype, shape = (name.split(" | ") + ["", ""])[:3]
        title = re.sub(r" \(.*?\)", "", title)  # the suite's short name; the results file has the rest
        for b in sorted(entries, key=_order):
            e = b["extra_info"]
            if e.get("backend") == "release":
                continue
            lines.append(
                f"| {title}, {shape} | {dtype} | {e['backend']} | {fmt_time(e.get('time_s'))} | "
                f"**{speedup(e, release)}** | {fmt_bytes(e.get('peak_extra_bytes'))} "
                f"({ratio(e.get('peak_extra_bytes'), release.get('peak_extra_bytes'), '')}) | {floors(e)} |"
            )
    if sweep:
        lines += ["", f"Kernel-variant sweep of the same run (`benchmarks/results/sweep-{slug(sweep['device'])}-"
                      f"{sweep['date']}.md`), the fastest correct variant per workload:", "",
                  "| workload | backend | fastest correct variant | median | vs release |", "| --- | --- | --- | ---: | ---: |"]
        for r in sweep["rows"]:
            if r["backend"] != "release" and sweep["best"].get(f"{r['workload']} | {r['backend']}") == r["variant"]:
                lines.append(f"| {r['workload']} | {r['backend']} | {r['variant']} | {r['time_ms']:.3g} ms | {r['speedup']:.3g}x |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, marker: str, text: str) -> None:
    """Replace what lies between <!-- MARKER:begin --> and <!-- MARKER:end --> in README.md."""
    begin, end = f"<!-- {marker}:begin -->\n", f"<!-- {marker}:end -->"
    old = readme.read_text()
    if begin not in old or end not in old:
        raise SystemExit(f"{readme}: no {begin.strip()} ... {end} block to replace")
    head, rest = old.split(begin, 1)
    readme.write_text(head + begin + text + end + rest.split(end, 1)[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", nargs="+", help="pytest-benchmark JSON files written by the benchmarks/ suites")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help=f"where to write <machine>-<date>.json/.md ({RESULTS})")
    p.add_argument("--no-files", action="store_true", help="only print the markdown")
    p.add_argument("--readme", type=Path, help="write the summary table of the (one) machine into this README's "
                   "<!-- gpu-results:begin/end --> block (cuda results) or cpu-results block")
    p.add_argument("--sweep", type=Path, help="a sweep-<gpu>-<date>.json of the same run, for --readme")
    p.add_argument("--stages", type=Path, help="gpu_check.sh's summary.txt, recorded with the results")
    args = p.parse_args(argv)
    if args.readme:
        (data,) = load(args.json).values()
        sweep = json.loads(args.sweep.read_text()) if args.sweep else None
        marker = "gpu-results" if data["machine_info"]["inik_fast"]["device"] == "cuda" else "cpu-results"
        update_readme(args.readme, marker, summary(data, sweep))
        print(f"updated the {marker} block of {args.readme}", file=sys.stderr)
        return 0
    texts = []
    for data in load(args.json).values():
        if args.stages:
            data["gpu_check_stages"] = args.stages.read_text()
        text = markdown(data)
        texts.append(text)
        if not args.no_files:
            name = stem(data)
            args.out_dir.mkdir(parents=True, exist_ok=True)
            (args.out_dir / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
            (args.out_dir / f"{name}.md").write_text(text)
            print(f"wrote {args.out_dir / name}.json and .md", file=sys.stderr)
    print("\n".join(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
