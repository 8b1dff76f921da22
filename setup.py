"""Builds the extension inik_fast._C: csrc/ops.cpp, the CPU kernels, and the CUDA kernels when a
CUDA toolkit and a CUDA build of torch are present.

Environment:
  INIK_FAST_CUDA=0|1     skip the CUDA kernels / require them (default: build them if possible)
  INIK_FAST_CPU_ARCH     -march for the CPU kernels (default: native)
  TORCH_CUDA_ARCH_LIST   CUDA archs (default without a visible GPU: 8.0;9.0+PTX)
  CUDA_HOME              CUDA toolkit (default: found from `nvcc` on PATH)
  MAX_JOBS               parallel compile jobs (default: from cores and free memory)
  INIK_FAST_SKIP_EXT=1   install the Python package without building the extension
"""
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def log(msg):
    print(f"[inik_fast setup] {msg}", file=sys.stderr)


def find_cuda_home():
    """The CUDA toolkit folder (with bin/nvcc and lib64/), from CUDA_HOME or the nvcc on PATH.
    `nvcc` may be a wrapper script, so ask nvcc itself where its toolkit is (--dryrun prints TOP)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and Path(home, "bin", "nvcc").exists():
            return str(Path(home).resolve())
    nvcc = shutil.which("nvcc") or shutil.which("/usr/local/cuda/bin/nvcc")
    if nvcc is None:
        return None
    try:
        cmd = [nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        m = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.M)
    except (OSError, subprocess.SubprocessError):
        m = None
    home = Path(m.group(1).strip()).resolve() if m else Path(nvcc).resolve().parent.parent
    has_runtime = any((home / d / "libcudart.so").exists() for d in ("lib64", "lib"))
    return str(home) if (home / "bin" / "nvcc").exists() and has_runtime else None


def wheel_cuda_includes():
    """Headers of the CUDA libraries that torch's wheel brings (nvidia/cu13/include: cusparse.h ...)."""
    spec = importlib.util.find_spec("nvidia")
    dirs = []
    for base in (spec.submodule_search_locations if spec else []) or []:
        dirs += sorted(glob.glob(os.path.join(base, "cu*", "include")))
        dirs += sorted(glob.glob(os.path.join(base, "*", "include")))
    return [d for i, d in enumerate(dirs) if d not in dirs[:i]]


def available_memory_gib():
    """MemAvailable (free memory plus the page cache the kernel can drop); SC_AVPHYS_PAGES counts
    free pages only, which a warm page cache makes small."""
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kib / 2**20
    except (OSError, StopIteration, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError):
        return 8.0


def default_max_jobs():
    return max(1, min(os.cpu_count() or 1, int(available_memory_gib() // 3)))  # nvcc can take ~3 GB a job


def arch_macro(arch_list):
    """TORCH_CUDA_ARCH_LIST "8.0;9.0+PTX" as a macro token "sm_80.sm_90+PTX"."""
    archs = [a for a in re.split(r"[;\s]+", arch_list) if a]
    return ".".join("sm_" + a.replace(".", "") for a in archs)


want_cuda = os.environ.get("INIK_FAST_CUDA", "auto")
cuda_home = find_cuda_home() if want_cuda != "0" else None
if cuda_home:
    os.environ["CUDA_HOME"] = cuda_home  # read when torch.utils.cpp_extension is imported

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

os.environ.setdefault("MAX_JOBS", str(default_max_jobs()))
build_cuda = bool(cuda_home) and torch.version.cuda is not None
if want_cuda == "1" and not build_cuda:
    sys.exit(f"INIK_FAST_CUDA=1 but no CUDA build is possible (toolkit: {cuda_home}, torch CUDA: {torch.version.cuda})")

cpp_sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
cu_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp")) if build_cuda else []
stems = [Path(s).stem for s in cpp_sources + cu_sources]
dup = sorted({s for s in stems if stems.count(s) > 1})
if dup:
    sys.exit(f"source files share a stem {dup}: their objects collide in the ninja build; rename one")

cpu_arch = os.environ.get("INIK_FAST_CPU_ARCH", "native")
cxx_flags = ["-O3", "-fopenmp", f"-march={cpu_arch}", "-ffp-contract=fast"]
ext_kwargs = dict(extra_link_args=["-fopenmp"])

if build_cuda:
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"  # PTX: GPUs newer than sm_90 JIT it
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or "%d.%d" % torch.cuda.get_device_capability()
    cxx_flags.append(f"-DINIK_FAST_CUDA_ARCHS={arch_macro(archs)}")
    includes = wheel_cuda_includes()
    log(f"CUDA kernels: toolkit {cuda_home}, archs {archs}, MAX_JOBS {os.environ['MAX_JOBS']}, wheel includes {includes}")
    ext = CUDAExtension(
        "inik_fast._C",
        cpp_sources + cu_sources,
        include_dirs=includes,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]},
        **ext_kwargs,
    )
else:
    log(f"CPU kernels only (INIK_FAST_CUDA={want_cuda}, toolkit: {cuda_home}, torch CUDA: {torch.version.cuda})")
    ext = CppExtension("inik_fast._C", cpp_sources, extra_compile_args={"cxx": cxx_flags}, **ext_kwargs)

setup(
    packages=["inik_fast", "inik_fast.benchmarking", "inik_fast.data", "inik_fast.kernels", "inik_fast.weights"],
    package_dir={"inik_fast": "inik_fast", "inik_fast.kernels": "kernels"},
    # the PEP 561 marker; the default checkpoint (scripts/train_default.sh)
    package_data={"inik_fast": ["py.typed"], "inik_fast.weights": ["*.pt"]},
    # `make install` installs the package once with INIK_FAST_SKIP_EXT=1, then builds the extension
    # in place (`build_ext --inplace`) so that ninja rebuilds only what changed.
    ext_modules=[] if os.environ.get("INIK_FAST_SKIP_EXT") == "1" else [ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
