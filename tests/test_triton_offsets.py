"""64-bit offsets of the Triton backward's per-program partial-sum slots: programs x slot size
passes 2^31 elements with large channel counts (O*G*C*M weights per slot, 2 x SMs programs).

A full reproduction needs about 35 GB (the slots of dweight alone pass 8 GB in float32), so on
the CPU the slot offset helper is checked under the interpreter, and the whole backward on a GPU.
"""
import pytest
import torch

from inik_fast import backends
from subprocesses import run_python

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def kernels():
    reasons = backends.not_supported_reasons("triton", DEVICE, torch.float32)
    if reasons:
        pytest.skip("; ".join(reasons))
    from inik_fast import kernels

    return kernels


triton = pytest.importorskip("triton")
tl = triton.language
from inik_fast.kernels.ikconv_tiles import slot_start  # noqa: E402


@triton.jit
def _probe(out, first, size):
    tl.store(out + tl.program_id(0), slot_start(tl.program_id(0) + first, size))


def test_slot_offsets_do_not_wrap_at_2_31(kernels):
    out = torch.zeros(2, dtype=torch.int64, device=DEVICE)
    size = 32 * 1 * 31_776 * 16  # O*G*C*M of the GPU test below on 132 SMs
    _probe[(2,)](out, 263, size)
    assert out.tolist() == [263 * size, 264 * size]  # both past 2^31


# The GPU check: x with C identical channels, so that every channel's dweight equals the C=1
# reference's; C is chosen so that the upper half of the programs' slots start past 2^31.
_GPU_SCRIPT = r"""
import torch
from inik_fast import kernels  # noqa: F401  (defines the Triton ops)
from inik_fast.kernels.launch import max_programs
from op_cases import ikconv_case, rel_err

dev = torch.device("cuda")
torch.backends.cudnn.allow_tf32 = False  # the reference's convolutions in full float32
programs = max_programs(dev)
O, G, M = 32, 1, 16
C = -(-2**31 // ((programs // 2) * O * G * M))
H, W = 16, 16 * programs  # at least one 16 x 16 tile per program
one = ikconv_case(1, 1, H, W, G, M, O, residual=False, dtype=torch.float32, device=dev)
grad_y = torch.randn(1, O, H, W, device=dev)
ref = torch.ops.inik_fast.ikconv_backward_reference(
    grad_y, one["x"], one["atoms"], one["scale"], one["basis"], one["weight"], False, False, True)[4]
x = one["x"].expand(1, C, H, W)
weight = one["weight"].expand(O, G, C, M)
got = torch.ops.inik_fast.ikconv_backward_triton(
    grad_y, x, one["atoms"], one["scale"], one["basis"], weight, False, False, True)[4]
assert programs * O * G * C * M > 2**31
err = max(rel_err(got[:, :, c], ref[:, :, 0]) for c in (0, C // 2, C - 1))
print("programs", programs, "C", C, "max rel err", err)
assert err <= 1e-4, err
"""


@pytest.mark.gpu
def test_backward_slots_past_2_31_on_gpu(kernels):
    """In a subprocess: a wrapped offset is an illegal address, which would end this process's CUDA."""
    print(run_python(_GPU_SCRIPT))
