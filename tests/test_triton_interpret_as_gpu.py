"""The interpreter with the GPU's block settings (INIK_FAST_INTERPRET_AS_GPU=1, kernels/launch.py):
taps in chunks of 32, int32 indices, the atom bank over several blocks of points and chunks of
hidden units, and the GPU's tile shapes. The other tests run the interpreter's own settings, which
take whole groups and the whole bank in one step and so never reach these paths."""
import os

import pytest
import torch

from inik_fast import backends
from subprocesses import run_python

_SCRIPT = r"""
import torch
import triton.language as tl
from inik_fast import ops
from inik_fast.kernels import atom_bank, ikconv_tiles, launch
from op_cases import IKCONV_GRAD_NAMES, atom_bank_case, atom_bank_run, ikconv_case, ikconv_run, rel_err

assert launch.taps("backward") == 32 and ikconv_tiles.IDX.value == tl.int32, (launch.TAPS, ikconv_tiles.IDX)
case = atom_bank_case(3, 4, 40)  # 147 grid points: 5 blocks of 32; 40 hidden units: 2 chunks of 32
sizes = atom_bank._sizes(case["coords"], case["w1"])
assert (sizes["BP"], sizes["HC"], sizes["HP"]) == (32, 32, 64), sizes
a_ref, g_ref = atom_bank_run(case, "reference")
a, g = atom_bank_run(case, "triton")
assert rel_err(a, a_ref) <= 1e-10
for k in g_ref:
    assert rel_err(g[k], g_ref[k]) <= 1e-10, k
case = ikconv_case(2, 2, 19, 21, 3, 5)  # group 3's 49 taps: two chunks of 32; ragged 8x16 / 16x16 tiles
y_ref, g_ref = ikconv_run(case, "reference")
for deterministic in (True, False):
    ops.set_deterministic(deterministic)
    y, g = ikconv_run(case, "triton")
    assert rel_err(y, y_ref) <= 1e-10
    for k in IKCONV_GRAD_NAMES:
        assert rel_err(g[k], g_ref[k]) <= 1e-10, (deterministic, k)
print("ok", launch.INTERPRET_TILE)
"""


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's settings, on a CPU-only machine")
@pytest.mark.parametrize("tile", ["8,16,4", "16,16,8"])
def test_interpreter_runs_the_gpu_settings(tile):
    if backends.not_supported_reasons("triton", "cpu"):
        pytest.skip("; ".join(backends.not_supported_reasons("triton", "cpu")))
    env = {"TRITON_INTERPRET": "1", "INIK_FAST_INTERPRET_AS_GPU": "1", "INIK_FAST_TRITON_TILE": tile,
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    th, tw, _ = tile.split(",")
    assert f"'TH': {th}, 'TW': {tw}" in run_python(_SCRIPT, env, timeout=600)
