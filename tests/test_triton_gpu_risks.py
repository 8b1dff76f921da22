"""Risks of the GPU backends that only a GPU settles (benchmarks/gpu_check.sh runs `pytest -m gpu`):
bitwise determinism across processes, the Triton backward's read-modify-writes with 8 warps,
float64 on Triton, and torch.compile through triton_op on inputs with padded strides."""
import pytest
import torch

from inik_fast import backends, ops
from op_cases import IKCONV_ARGS, IKCONV_GRAD_NAMES, atom_bank_case, atom_bank_run, cast, ikconv_case, ikconv_run, rel_err
from subprocesses import run_python

F32, F64 = torch.float32, torch.float64
gpu = pytest.mark.gpu


def usable(backend, dtype=F32):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    reasons = backends.not_supported_reasons(backend, "cuda", dtype)
    if reasons:
        pytest.skip("; ".join(reasons))


_GRADIENT_BITS = r"""
import hashlib, torch
from inik_fast import backends, ops
from op_cases import atom_bank_case, atom_bank_run, cast, ikconv_case, ikconv_run

ops.set_deterministic(True)
for backend in ("triton", "cuda"):
    if backends.not_supported_reasons(backend, "cuda", torch.float32):
        continue
    _, g = ikconv_run(cast(ikconv_case(2, 3, 96, 80, 7, 10), torch.float32, "cuda"), backend)
    _, ga = atom_bank_run(atom_bank_case(7, 10, 64, dtype=torch.float32, device="cuda"), backend)
    for name, t in (("dweight", g["weight"]), ("datoms", g["atoms"]), ("dw2", ga["w2"]), ("domega", ga["omega"])):
        print(backend, name, hashlib.sha256(t.cpu().numpy().tobytes()).hexdigest())
"""


@gpu
def test_deterministic_gradients_are_bitwise_equal_across_processes():
    """Two fresh processes (each with its own autotuning), for triton and, where it runs, cuda:
    dweight, datoms and the atom bank's gradients bit for bit."""
    usable("triton")
    first, second = run_python(_GRADIENT_BITS), run_python(_GRADIENT_BITS)
    assert first.startswith("triton dweight")
    assert first == second


_RACE = r"""
import torch
from inik_fast import ops
from inik_fast.kernels import launch
from op_cases import IKCONV_GRAD_NAMES, cast, ikconv_case, ikconv_run, rel_err

assert [c.num_warps for c in launch.GPU_TILES] == [8], launch.GPU_TILES
for C in (4, 8):
    case = ikconv_case(2, C, 64, 48, 3, 10, O=3)
    _, g_ref = ikconv_run(case, "reference")
    results = {}
    for deterministic in (True, False):
        ops.set_deterministic(deterministic)
        results[deterministic] = ikconv_run(cast(case, torch.float32, "cuda"), "triton")[1]
    for k in IKCONV_GRAD_NAMES:
        assert rel_err(results[True][k], g_ref[k]) <= 1e-4, (C, k, "deterministic vs reference")
        assert rel_err(results[True][k], results[False][k]) <= 1e-5, (C, k, "deterministic vs atomics")
print("ok")
"""


@gpu
def test_backward_partial_sums_with_8_warps():
    """The deterministic backward adds each channel into the same datoms addresses with a plain
    load and store (one barrier per tile): with C >= 4 and 8 warps (forced through
    INIK_FAST_TRITON_TILE), a missing ordering between warps would show against the reference and
    against the atomics path."""
    usable("triton")
    run_python(_RACE, {"INIK_FAST_TRITON_TILE": "16,16,8"})


@gpu
def test_float64_on_the_gpu():
    """float64 is on the Triton dtype list (DTYPES), so "auto" can take it: exact to 1e-10."""
    usable("triton", F64)
    case = ikconv_case(2, 3, 37, 29, 3, 5, O=2, residual=False)
    y_ref, g_ref = ikconv_run(case, "reference")
    y, g = ikconv_run(cast(case, F64, "cuda"), "triton")
    assert rel_err(y, y_ref) <= 1e-10
    for k in IKCONV_GRAD_NAMES:
        if g_ref[k] is not None:
            assert rel_err(g[k], g_ref[k]) <= 1e-10, k
    a_ref, ga_ref = atom_bank_run(atom_bank_case(3, 4, 64), "reference")
    a, ga = atom_bank_run(atom_bank_case(3, 4, 64, device="cuda"), "triton")
    assert rel_err(a, a_ref) <= 1e-10
    for k in ga_ref:
        assert rel_err(ga[k], ga_ref[k]) <= 1e-9, k


@gpu
def test_torch_compile_with_padded_strides():
    """x, scale and basis are slices of wider images (W = 1037 of 1100: rows padded, not a multiple
    of 32); the compiled triton_op must see through the strides, forward and backward."""
    usable("triton")
    B, C, H, W, G, M = 1, 3, 24, 1037, 2, 4
    case = cast(ikconv_case(B, C, H, W, G, M), F32, "cuda")
    wide = {}
    for k in ("x", "scale", "basis"):
        t = case[k]
        wide[k] = torch.zeros(*t.shape[:-1], 1100, device="cuda")
        wide[k][..., :W] = t
        wide[k].requires_grad_()
    params = {k: case[k].clone().requires_grad_() for k in ("atoms", "weight", "bias")}

    def run(fn):
        args = {**{k: wide[k][..., :W] for k in wide}, **params}
        assert not args["x"].is_contiguous()
        y = fn(*(args[k] for k in IKCONV_ARGS))
        leaves = [wide["x"], params["atoms"], wide["scale"], wide["basis"], params["weight"], params["bias"]]
        grads = torch.autograd.grad(y, leaves, torch.ones_like(y))
        return y, dict(zip(IKCONV_GRAD_NAMES, grads))

    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # the reference's convolutions in full float32
    try:
        y_ref, g_ref = run(lambda *a: ops.inverse_kernel_conv(*a, backend="reference"))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    compiled = torch.compile(lambda *a: ops.inverse_kernel_conv(*a, backend="triton"), fullgraph=True)
    y, g = run(compiled)
    assert rel_err(y, y_ref) <= 1e-4
    for k in IKCONV_GRAD_NAMES:
        assert rel_err(g[k], g_ref[k]) <= 1e-4, k
    assert not g["x"][..., W:].any()
