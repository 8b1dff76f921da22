"""The two ops of `docs/ops.md` as `torch.library` custom ops, and their public entry points.

Each backend provides a forward and a backward op in the `inik_fast` library:

    backend     forward / backward ops                        defined in
    reference   {kind}_forward_reference / _backward_reference  this file (Python, any device)
    cpu, cuda   {kind}_forward / {kind}_backward                csrc/ops.cpp schemas, csrc/{cpu,cuda} kernels
    triton      {kind}_forward_triton / _backward_triton        kernels/ (torch.library.triton_op)

with kind in {atom_bank, ikconv}. This file gives every one of them the same fake (meta) kernel
and the same autograd formula, so all backends share one contract. The public functions
`atom_bank` and `inverse_kernel_conv` validate their arguments once, for every backend, and
pick the backend (`inik_fast.backends`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _extension, backends, reference  # importing _extension loads the C++ ops

_SUFFIX = {"reference": "_reference", "cpu": "", "cuda": "", "triton": "_triton"}
_deterministic = True


def set_deterministic(flag: bool) -> None:
    """Deterministic pixel reductions in the backward (the default). False lets the GPU
    backends use atomics. `torch.use_deterministic_algorithms(True)` forces it on."""
    global _deterministic
    _deterministic = bool(flag)


def is_deterministic() -> bool:
    return _deterministic or torch.are_deterministic_algorithms_enabled()


# ---------------------------------------------------------------------------------------------
# reference backend
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("inik_fast::atom_bank_forward_reference", mutates_args=())
def _atom_bank_forward_reference(
    coords: Tensor, mask: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, omega: Tensor
) -> Tensor:
    return reference.atom_bank_forward(coords, mask, w1, b1, w2, b2, w3, omega).contiguous()


@torch.library.custom_op("inik_fast::atom_bank_backward_reference", mutates_args=())
def _atom_bank_backward_reference(
    grad_atoms: Tensor,
    coords: Tensor,
    mask: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3: Tensor,
    omega: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = reference.atom_bank_backward(grad_atoms, coords, mask, w1, b1, w2, b2, w3, omega)
    return tuple(g.contiguous() for g in grads)


@torch.library.custom_op("inik_fast::ikconv_forward_reference", mutates_args=())
def _ikconv_forward_reference(
    x: Tensor, atoms: Tensor, scale: Tensor, basis: Tensor, weight: Tensor, bias: Optional[Tensor], residual: bool
) -> Tensor:
    return reference.ikconv_forward(x, atoms, scale, basis, weight, bias, residual).contiguous()


@torch.library.custom_op("inik_fast::ikconv_backward_reference", mutates_args=())
def _ikconv_backward_reference(
    grad_y: Tensor,
    x: Tensor,
    atoms: Tensor,
    scale: Tensor,
    basis: Tensor,
    weight: Tensor,
    residual: bool,
    need_x_grad: bool,
    deterministic: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = reference.ikconv_backward(grad_y, x, atoms, scale, basis, weight, residual, need_x_grad)
    return tuple(g.contiguous() for g in grads)


# ---------------------------------------------------------------------------------------------
# fake kernels and autograd, shared by every backend
# ---------------------------------------------------------------------------------------------
def _atom_bank_forward_fake(coords, mask, w1, b1, w2, b2, w3, omega):
    G, K = coords.shape[0], coords.shape[1]
    return w1.new_empty(G, w1.shape[0], K, K)


def _atom_bank_backward_fake(grad_atoms, coords, mask, w1, b1, w2, b2, w3, omega):
    return tuple(torch.empty_like(t) for t in (w1, b1, w2, b2, w3, omega))


def _atom_bank_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _ikconv_forward_fake(x, atoms, scale, basis, weight, bias, residual):
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[2], x.shape[3])


def _ikconv_backward_fake(grad_y, x, atoms, scale, basis, weight, residual, need_x_grad, deterministic):
    dx = torch.empty_like(x) if need_x_grad else x.new_empty(0)
    dbias = weight.new_empty(weight.shape[0])
    return dx, torch.empty_like(atoms), torch.empty_like(scale), torch.empty_like(basis), torch.empty_like(weight), dbias


def _ikconv_setup_context(ctx, inputs, output):
    x, atoms, scale, basis, weight, bias, residual = inputs
    ctx.save_for_backward(x, atoms, scale, basis, weight)
    ctx.residual = residual
    ctx.has_bias = bias is not None


def _builds_graph(tensors) -> bool:
    """True in a backward run with create_graph=True that needs these tensors' gradients."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _autograd_formulas(suffix: str):
    """backward functions of both ops, calling the backward ops of the backend with `suffix`.

    With create_graph=True (double backward) the reference backend runs its backward formulas as
    plain PyTorch outside their op, so autograd differentiates them; the fused backends, whose
    backward kernels have no derivative, refuse it rather than return a wrong second derivative."""
    atom_bank_bwd = getattr(torch.ops.inik_fast, f"atom_bank_backward{suffix}")
    ikconv_bwd = getattr(torch.ops.inik_fast, f"ikconv_backward{suffix}")

    def graphed(op: str, formula, args):
        if suffix == "_reference":
            return formula(*args)
        backend = {"_triton": "triton", "": args[1].device.type}[suffix]
        raise RuntimeError(
            f"{op}: backend {backend!r} has no double backward (create_graph=True through it); "
            "use backend='reference' for second-order gradients"
        )

    def atom_bank_backward(ctx, grad):
        coords, mask, *params = ctx.saved_tensors
        args = (grad.contiguous(), coords, mask, *params)
        if _builds_graph((grad, *params)):
            grads = graphed("atom_bank", reference.atom_bank_backward, args)
        else:
            grads = atom_bank_bwd(*args)
        return (None, None, *grads)

    def ikconv_backward(ctx, grad_y):
        x, atoms, scale, basis, weight = ctx.saved_tensors
        need_dx = ctx.needs_input_grad[0]
        args = (grad_y.contiguous(), x, atoms, scale, basis, weight, ctx.residual, need_dx)
        if _builds_graph((grad_y, x, atoms, scale, basis, weight)):
            dx, datoms, dscale, dbasis, dweight, dbias = graphed("inverse_kernel_conv", reference.ikconv_backward, args)
        else:
            dx, datoms, dscale, dbasis, dweight, dbias = ikconv_bwd(*args, is_deterministic())
        return dx if need_dx else None, datoms, dscale, dbasis, dweight, dbias if ctx.has_bias else None, None

    return atom_bank_backward, ikconv_backward


def register_backend(suffix: str, *, fake: bool = True) -> None:
    """Give the ops `inik_fast::{atom_bank,ikconv}_{forward,backward}{suffix}` the shared fake
    kernels (unless the op brings its own, as triton_op does) and the shared autograd formulas."""
    lib = "inik_fast::"
    if fake:
        torch.library.register_fake(f"{lib}atom_bank_forward{suffix}", _atom_bank_forward_fake)
        torch.library.register_fake(f"{lib}atom_bank_backward{suffix}", _atom_bank_backward_fake)
        torch.library.register_fake(f"{lib}ikconv_forward{suffix}", _ikconv_forward_fake)
        torch.library.register_fake(f"{lib}ikconv_backward{suffix}", _ikconv_backward_fake)
    atom_bank_backward, ikconv_backward = _autograd_formulas(suffix)
    torch.library.register_autograd(
        f"{lib}atom_bank_forward{suffix}", atom_bank_backward, setup_context=_atom_bank_setup_context
    )
    torch.library.register_autograd(f"{lib}ikconv_forward{suffix}", ikconv_backward, setup_context=_ikconv_setup_context)


def _lstm_gates_fake(gates, bias, c):
    N, H = gates.shape[0], gates.shape[1] // 4
    return gates.new_empty(N, H), gates.new_empty(N, H)


def _lstm_gates_backward_fake(gates, bias, c, grad_h, grad_c):
    return torch.empty_like(gates), None if c is None else torch.empty_like(c)


def _conv3x3_winograd_fake(xs, weight):
    B, _, H, W = xs[0].shape
    return xs[0].new_empty(B, weight.shape[0], H, W).contiguous(memory_format=torch.channels_last)


def _conv3x3_winograd_setup_context(ctx, inputs, output):
    xs, weight = inputs
    ctx.save_for_backward(weight, *xs)


def _conv3x3_winograd_backward(ctx, grad):
    """A convolution's gradient (the op is a convolution; only its forward's algorithm differs)."""
    weight, *xs = ctx.saved_tensors
    x = xs[0] if len(xs) == 1 else torch.cat(xs, 1)
    mask = [any(ctx.needs_input_grad[0]), ctx.needs_input_grad[1], False]
    dx, dw, _ = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
    return ([None] * len(xs) if dx is None else list(dx.split([t.shape[1] for t in xs], 1))), dw


def _lstm_gates_setup_context(ctx, inputs, output):
    gates, bias, c = inputs
    ctx.save_for_backward(gates, bias, c, output[1])


def _lstm_gates_backward(ctx, dh, dcn):
    """Gradients of (h, c') = lstm_gates(a, b, c): the C++ backward op, or with create_graph=True
    the same formulas in PyTorch, which autograd differentiates (gates recomputed by both)."""
    gates, bias, c, cn = ctx.saved_tensors
    if _builds_graph((gates, bias, c, dh, dcn)):
        hidden = cn.shape[1]
        a = gates + bias
        i, f, o = torch.sigmoid(a[:, : 3 * hidden]).chunk(3, 1)
        g = torch.tanh(a[:, 3 * hidden :])
        t = torch.tanh(cn)
        dh = torch.zeros_like(cn) if dh is None else dh
        dc = dh * o * (1 - t * t) + (0 if dcn is None else dcn)
        df = dc * c * f * (1 - f) if c is not None else torch.zeros_like(cn)
        da = torch.cat([dc * g * i * (1 - i), df, dh * t * o * (1 - o), dc * i * (1 - g * g)], 1)
        dc = None if c is None else dc * f
    else:
        da, dc = torch.ops.inik_fast.lstm_gates_backward(gates, bias, c, dh, dcn)
    return da, da.sum(0), dc


register_backend("_reference")
if _extension.LOAD_ERROR is None:
    register_backend("")
    # the trunk's LSTM cell update (csrc/cpu/lstm_gates_cpu.cpp), used by trunk.lstm_cell
    torch.library.register_fake("inik_fast::lstm_gates", _lstm_gates_fake)
    torch.library.register_fake("inik_fast::lstm_gates_backward", _lstm_gates_backward_fake)
    torch.library.register_autograd("inik_fast::lstm_gates", _lstm_gates_backward, setup_context=_lstm_gates_setup_context)
    # the trunk's Winograd convolution (csrc/cpu/conv3x3_winograd_cpu.cpp), used by trunk.conv3_reflect
    torch.library.register_fake("inik_fast::conv3x3_winograd", _conv3x3_winograd_fake)
    torch.library.register_autograd(
        "inik_fast::conv3x3_winograd", _conv3x3_winograd_backward, setup_context=_conv3x3_winograd_setup_context
    )

_triton_registered = False


def _op(kind: str, backend: str):
    global _triton_registered
    if backend == "triton" and not _triton_registered:
        from . import kernels  # noqa: F401  (defines the *_triton ops and registers them)

        _triton_registered = True
    return getattr(torch.ops.inik_fast, f"{kind}_forward{_SUFFIX[backend]}")


# ---------------------------------------------------------------------------------------------
# argument checks, one place for every backend
# ---------------------------------------------------------------------------------------------
def _need(ok: bool, op: str, what) -> None:
    """Raise `op: what` unless ok. `what` may be a callable giving the message, so that it is built
    only on failure: under torch.compile with dynamic shapes, formatting a SymInt breaks the graph."""
    if not ok:
        raise ValueError(f"{op}: {what() if callable(what) else what}")


def _check_tensors(op: str, named: dict) -> None:
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    (first, t0), *rest = named.items()
    for n, t in rest:
        _need(t.device == t0.device, op, lambda: f"{n} is on {t.device} but {first} is on {t0.device}; expected one device")


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(map(str, t.shape)) + "]"


def _check_atom_bank(coords, mask, w1, b1, w2, b2, w3, omega, op: str = "atom_bank") -> None:
    named = dict(coords=coords, mask=mask, w1=w1, b1=b1, w2=w2, b2=b2, w3=w3, omega=omega)
    _check_tensors(op, named)
    _need(coords.dim() == 4, op, lambda: f"coords must be [G, K, K, D], got {_shape(coords)}")
    G, K, K2, D = coords.shape
    _need(1 <= G <= 9 and K == K2 == 2 * G + 1, op, lambda: f"coords must be [G, 2G+1, 2G+1, D] with G in 1..9, got {_shape(coords)}")
    _need(w1.dim() == 3 and w1.shape[2] == D, op, lambda: f"w1 must be [M, Hd, D={D}], got {_shape(w1)}")
    M, Hd = w1.shape[0], w1.shape[1]
    _need(1 <= M <= 16, op, lambda: f"w1 must have M in 1..16 atoms, got M={M}")
    _need(1 <= Hd <= 128, op, lambda: f"w1 must have a hidden width Hd in 1..128, got Hd={Hd}")
    expected = dict(mask=(G, K, K), b1=(M, Hd), w2=(M, Hd, Hd), b2=(M, Hd), w3=(M, Hd), omega=(M,))
    for name, shape in expected.items():
        t = named[name]
        _need(tuple(t.shape) == shape, op, lambda: f"{name} must be {list(shape)}, got {_shape(t)}")
    _need(w1.dtype in backends.FLOAT_DTYPES, op, lambda: f"w1 must be float16, bfloat16, float32 or float64, got {w1.dtype}")
    for name, t in named.items():
        _need(t.dtype == w1.dtype, op, lambda: f"{name} has dtype {t.dtype}; expected w1's {w1.dtype}")


def _check_ikconv(x, atoms, scale, basis, weight, bias, residual, op: str = "inverse_kernel_conv") -> None:
    named = dict(x=x, atoms=atoms, scale=scale, basis=basis, weight=weight)
    if bias is not None:
        named["bias"] = bias
    _check_tensors(op, named)
    _need(x.dim() == 4, op, lambda: f"x must be [B, C, H, W], got {_shape(x)}")
    B, C, H, W = x.shape
    _need(atoms.dim() == 4, op, lambda: f"atoms must be [G, M, K, K], got {_shape(atoms)}")
    G, M, K, K2 = atoms.shape
    _need(1 <= G <= 9 and K == K2 == 2 * G + 1, op, lambda: f"atoms must be [G, M, 2G+1, 2G+1] with G in 1..9, got {_shape(atoms)}")
    _need(1 <= M <= 16, op, lambda: f"atoms must have M in 1..16 atoms per group, got M={M}")
    _need(tuple(scale.shape) == (B, G, H, W), op, lambda: f"scale must be [B, G, H, W] = {[B, G, H, W]}, got {_shape(scale)}")
    _need(tuple(basis.shape) == (B, M, H, W), op, lambda: f"basis must be [B, M, H, W] = {[B, M, H, W]}, got {_shape(basis)}")
    _need(weight.dim() == 4 and tuple(weight.shape[1:]) == (G, C, M), op, lambda: f"weight must be [O, G={G}, C={C}, M={M}], got {_shape(weight)}")
    O = weight.shape[0]
    _need(O >= 1, op, "weight must have O >= 1 output channels")
    if bias is not None:
        _need(tuple(bias.shape) == (O,), op, lambda: f"bias must be [O={O}], got {_shape(bias)}")
    _need(not residual or O == C, op, lambda: f"residual=True needs O == C, got O={O}, C={C}")
    _need(x.dtype in backends.FLOAT_DTYPES, op, lambda: f"x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    for name in ("scale", "basis"):
        _need(named[name].dtype == x.dtype, op, lambda: f"{name} has dtype {named[name].dtype}; expected x's {x.dtype}")
    allowed = {x.dtype, reference.acc_dtype(x.dtype)}
    for name in ("atoms", "weight", "bias"):
        if name in named:
            _need(named[name].dtype in allowed, op, lambda: f"{name} has dtype {named[name].dtype}; expected one of {sorted(map(str, allowed))}")


def _ikconv_operands(x, atoms, scale, basis, weight, bias) -> tuple:
    """The checked inputs as the kernels take them: contiguous, with atoms, weight and bias in the
    accumulation dtype of x."""
    acc = reference.acc_dtype(x.dtype)
    bias = None if bias is None else bias.to(acc).contiguous()
    return x.contiguous(), atoms.to(acc).contiguous(), scale.contiguous(), basis.contiguous(), weight.to(acc).contiguous(), bias


# ---------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------
def atom_bank(coords, mask, w1, b1, w2, b2, w3, omega, *, backend: str = "auto") -> Tensor:
    """Evaluate all G*M INR atoms in one call: [G, M, K, K], zero outside each group's window.

    coords [G, K, K, D], mask [G, K, K] (9/k_g^2 inside group g's window, else 0), per-atom MLP
    weights w1 [M, Hd, D], b1 [M, Hd], w2 [M, Hd, Hd], b2 [M, Hd], w3 [M, Hd], omega [M], all of
    one dtype (float16/bfloat16 on the reference and cpu backends only; cpu computes them in float32).
    Differentiable in w1, b1, w2, b2, w3 and omega.
    """
    _check_atom_bank(coords, mask, w1, b1, w2, b2, w3, omega)
    name = backends.resolve(backend, w1.device, w1.dtype)
    supported = backends.BANK_DTYPES[name]
    _need(w1.dtype in supported, "atom_bank", lambda: f"w1 must be {backends._names(supported)} on backend {name!r}, got {w1.dtype}")
    args = [t.contiguous() for t in (coords, mask, w1, b1, w2, b2, w3, omega)]
    return _op("atom_bank", name)(*args)


def inverse_kernel_conv(
    x, atoms, scale, basis, weight, bias=None, *, residual: bool = True, backend: str = "auto"
) -> Tensor:
    """Spatially varying inverse-kernel convolution, [B, O, H, W].

    y[b,o,p] = bias[o] + (x[b,o,p] if residual)
               + sum_{g,c,m} weight[o,g,c,m] scale[b,g,p] basis[b,m,p] (atom[g,m] * x[b,c])[p]
    where (atom[g,m] * x) correlates group g's centred (2g+3)^2 window of the atom with the
    zero-padded image. x, scale, basis share one dtype; atoms, weight and bias have that dtype
    or, for float16/bfloat16 inputs, float32 (they are computed in float32 then).
    """
    _check_ikconv(x, atoms, scale, basis, weight, bias, residual)
    name = backends.resolve(backend, x.device, x.dtype)
    return _op("ikconv", name)(*_ikconv_operands(x, atoms, scale, basis, weight, bias), bool(residual))
