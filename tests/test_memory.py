"""Memory budgets: sizes, the forward's estimate against a measurement, the tile a budget allows."""
import gc
import mmap
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inik_fast import INIKNetConfig, available_backends, memory
from inik_fast.errors import UserError

TINY = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=2, max_kernel_size=5)


def test_sizes_parse_or_name_the_option():
    assert memory.parse_size("4GiB") == 4 * 2**30
    assert memory.parse_size("4G") == memory.parse_size("4gb") == 4 * 10**9
    assert memory.parse_size(" 1.5 MiB") == 3 * 2**19
    assert memory.parse_size("123456") == 123456
    for bad in ("lots", "4 GiBs", "-1G", "0", "", "1e9"):
        with pytest.raises(UserError, match=rf"--max-memory {bad}: expected a size > 0 such as 4GiB"):
            memory.parse_size(bad)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_forward_estimate_bounds_the_measured_peak(backend):
    if backend not in available_backends("cpu"):
        pytest.skip(f"the {backend} backend is not available")
    for h, w in ((96, 128), (256, 320)):
        measured = memory.measure_forward_bytes(TINY.to_dict(), h, w, backend)
        estimate = memory.forward_bytes(TINY, h, w, backend=backend)
        assert measured <= estimate, (h, w, measured, estimate)


def test_a_smaller_budget_picks_a_smaller_tile():
    H, W, halo = 3000, 4000, 96
    whole = memory.forward_bytes(TINY, H, W)
    assert memory.choose_tile(TINY, H, W, budget=whole + 10, held=10, halo=halo) is None  # fits: untiled
    tiles = [memory.choose_tile(TINY, H, W, budget=whole // k, held=0, halo=halo) for k in (2, 4, 8)]
    assert tiles[0] > tiles[1] > tiles[2] >= 16 and all(t % 16 == 0 for t in tiles), tiles
    for t, k in zip(tiles, (2, 4, 8)):  # each tile's largest window fits its budget
        side = t + 2 * halo
        assert memory.forward_bytes(TINY, min(side, H), min(side, W)) + memory.TILING_BYTES_PER_PIXEL * H * W <= whole // k
    # equal tiles: 4000 px in 3 tiles of 1344 rather than 1392 + 1392 + 1216
    t = memory.choose_tile(TINY, H, W, budget=memory.forward_bytes(TINY, 1392 + 192, 1392 + 192) + 16 * H * W, held=0, halo=halo)
    assert t == 1344
    with pytest.raises(UserError, match=r"--max-memory 1 MiB: too little for a 4000x3000 image with a 96 px halo; it needs at least"):
        memory.choose_tile(TINY, H, W, budget=2**20, held=0, halo=halo)


def test_peak_memory_sees_an_allocation():
    # cyclic garbage left by earlier work, which a collection inside the block would free while
    # the block allocates: the peak must not count it as held at the start
    cycle = [torch.ones(64 * 2**20 // 4)]
    cycle.append(cycle)
    del cycle
    with memory.PeakMemory("cpu") as p:
        gc.collect()  # as the allocation below may trigger
        # 64 MiB of fresh pages, touched: straight from the kernel, since malloc may serve even a
        # block this large from memory its heap already holds (seen after earlier tests)
        block = mmap.mmap(-1, 64 * 2**20)
        for i in range(0, len(block), mmap.PAGESIZE):
            block[i] = 1
        block.close()
    assert p.peak - p.start >= 60 * 2**20 and p.kind == "process RSS"


def test_large_photo_script_measures_a_deblur_process(tmp_path):
    """scripts/large_photo.py (the 12 MP record) at a small size: one row per precision and malloc setting, the
    process's peak RSS beside the peak deblur printed, both of a process that loaded torch."""
    out = tmp_path / "large.md"
    proc = subprocess.run([sys.executable, "scripts/large_photo.py", "--size", "96x64", "--precision", "fp32", "bf16", "--malloc", "system", "kept", "--out", str(out)],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^\| 96x64 \| (\w+) \| (\w+) \| [\d.]+ s \| ([\d.]+) GiB \| ([\d.]+) (\w+) \| within 6 GiB \|$", out.read_text(), re.M)
    assert [r[:2] for r in rows] == [("fp32", "system"), ("fp32", "kept"), ("bf16", "system"), ("bf16", "kept")], out.read_text()
    for _, _, rss, printed, unit in rows:
        assert 0.1 < float(rss) < 6 and unit in ("MiB", "GiB")
