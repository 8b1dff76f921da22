"""Random inputs for the two ops, and helpers that compare a backend with the reference."""
from __future__ import annotations

import torch

from inik_fast import ops, release
from inik_fast.atoms import coords_and_mask

# The ops' tensor arguments in call order; every ikconv input and the atom MLP weights have gradients.
IKCONV_ARGS = ("x", "atoms", "scale", "basis", "weight", "bias")
ATOM_BANK_ARGS = ("coords", "mask", "w1", "b1", "w2", "b2", "w3", "omega")
IKCONV_GRAD_NAMES = IKCONV_ARGS
ATOM_BANK_GRAD_NAMES = ATOM_BANK_ARGS[2:]
F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
# relative error allowed for results computed in float64 / float32
TOL = {F64: 1e-10, F32: 1e-4}


def window_mask(G: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """1 inside group g's centred (2g+3)^2 window of the K x K grid, else 0: [G, 1, K, K]."""
    K = 2 * G + 1
    m = torch.zeros(G, 1, K, K, dtype=dtype, device=device)
    for g in range(G):
        o = G - 1 - g
        m[g, :, o : o + 2 * g + 3, o : o + 2 * g + 3] = 1
    return m


def ikconv_case(B, C, H, W, G, M, O=None, *, bias=True, residual=None, dtype=torch.float64, device="cpu", seed=0):
    """Inputs of inverse_kernel_conv, in float64 (cast them with `cast`). Atoms are nonzero outside
    their groups' windows too, where every backend must ignore them (a kernel that used the full
    K x K window for every group would fail); scale is a softmax over G+1 groups, as in the model."""
    gen = torch.Generator().manual_seed(seed)
    O = C if O is None else O
    residual = (O == C) if residual is None else residual
    K = 2 * G + 1

    def rnd(*shape, s=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * s

    case = dict(
        x=rnd(B, C, H, W),
        atoms=rnd(G, M, K, K, s=0.3),
        scale=torch.softmax(rnd(B, G + 1, H, W), 1)[:, 1:].contiguous(),
        basis=rnd(B, M, H, W),
        weight=rnd(O, G, C, M, s=0.2),
        bias=rnd(O) if bias else None,
        residual=residual,
    )
    return cast(case, dtype, device)


def cast(case: dict, dtype, device="cpu") -> dict:
    """x, scale, basis in `dtype`; atoms, weight, bias in the accumulation dtype of `dtype`."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    out = {}
    for k, v in case.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device=device, dtype=dtype if k in ("x", "scale", "basis") else acc)
        out[k] = v
    return out


def ikconv_run(case: dict, backend: str, cotangent: torch.Tensor | None = None, *, grads=IKCONV_GRAD_NAMES, fn=None):
    """Output and the gradients named in `grads` (for L = sum(y * cotangent))."""
    leaves = {k: (v.detach().clone().requires_grad_(k in grads) if isinstance(v, torch.Tensor) else v)
              for k, v in case.items()}
    args = [leaves[k] for k in IKCONV_ARGS]
    if fn is None:
        y = ops.inverse_kernel_conv(*args, residual=leaves["residual"], backend=backend)
    else:
        y = fn(*args, residual=leaves["residual"])
    if cotangent is None:
        cotangent = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cot = cotangent.to(device=y.device, dtype=y.dtype)
    wanted = [k for k in grads if isinstance(leaves[k], torch.Tensor)]
    gs = torch.autograd.grad(y, [leaves[k] for k in wanted], cot, allow_unused=True) if y.numel() else [None] * len(wanted)
    return y.detach(), {k: g for k, g in zip(wanted, gs)}


def release_op(x, atoms, scale, basis, weight, bias, residual):
    """The release's computation in the inputs' own precision ("plain PyTorch at that precision")."""
    dt = x.dtype
    return release.release_inverse_kernel_conv(
        x, atoms.to(dt), scale, basis, weight.to(dt), None if bias is None else bias.to(dt), residual
    )


def atom_bank_case(G, M, Hd=64, D=3, *, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    coords = "polar" if D == 3 else "grid"
    P, Q = coords_and_mask(G, coords)

    def rnd(*shape, s=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * s).to(device=device, dtype=dtype)

    return dict(
        coords=P.to(device=device, dtype=dtype),
        mask=Q.to(device=device, dtype=dtype),
        w1=rnd(M, Hd, D, s=0.5),
        b1=rnd(M, Hd, s=0.1),
        w2=rnd(M, Hd, Hd, s=1.0 / Hd**0.5),
        b2=rnd(M, Hd, s=0.1),
        w3=rnd(M, Hd, s=1.0 / Hd**0.5),
        omega=torch.linspace(2, 12, M, dtype=torch.float64).to(device=device, dtype=dtype) if M > 1 else rnd(1).abs() + 2,
    )


def atom_bank_run(case: dict, backend: str, *, fn=None, cotangent_dtype=None):
    """Atoms and the parameter gradients for a fixed random cotangent, as rounded to
    `cotangent_dtype` (default: the atoms' dtype)."""
    leaves = {k: v.detach().clone().requires_grad_(k in ATOM_BANK_GRAD_NAMES) for k, v in case.items()}
    args = [leaves[k] for k in ATOM_BANK_ARGS]
    a = ops.atom_bank(*args, backend=backend) if fn is None else fn(*args)
    cot = torch.randn(a.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cot = cot.to(cotangent_dtype or a.dtype).to(a)
    gs = torch.autograd.grad(a, [leaves[k] for k in ATOM_BANK_GRAD_NAMES], cot)
    return a.detach(), dict(zip(ATOM_BANK_GRAD_NAMES, gs))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(max |b|, tiny), in float64."""
    a, b = a.double().cpu(), b.double().cpu()
    if b.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def rounding_excess(a, ref, dtype) -> float:
    """The error of `a` beyond rounding the exact `ref` to `dtype`: max(|a - ref| - half an ulp
    of ref) / max |ref|, element by element."""
    a, ref = a.double().cpu(), ref.double().cpu()
    return ((a - ref).abs() - torch.finfo(dtype).eps / 2 * ref.abs()).max().item() / ref.abs().max().clamp_min(1e-30).item()


def beyond_rounding(a, ref, dtype) -> float:
    """The relative error of `a` in float32/float64; in half precision, its error beyond rounding
    the exact `ref` to that dtype."""
    return rel_err(a, ref) if dtype in TOL else rounding_excess(a, ref, dtype)


def error_and_bound(got, ref, dtype, *, rounded: bool, plain=None) -> tuple[float, float]:
    """(error, bound) of one result of an op run on `dtype` inputs, against the exact `ref`.

    float32/float64: relative error within TOL. Half precision computed in float32 from the upcast
    inputs: a result `rounded` to that dtype may differ from the exact one by its rounding (half
    an ulp, element by element) plus float32's error, no more (measured: at most 1e-5 beyond the
    rounding); a float32 result by float32's error. With `plain`, the same result of plain PyTorch
    at that precision (for kernels that compute in half precision): at most twice its error."""
    if dtype in TOL:
        return rel_err(got, ref), TOL[dtype]
    if plain is not None:
        return rel_err(got, ref), 2 * rel_err(plain, ref) + 1e-5
    if rounded:
        return beyond_rounding(got, ref, dtype), 1e-5
    return rel_err(got, ref), TOL[F32]
