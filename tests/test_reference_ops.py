"""The reference backend against the release's computation and against autograd, plus the
properties the op must have (it reduces to conv2d for constant selections)."""
import pytest
import torch
import torch.nn.functional as F

from inik_fast import available_backends, ops, reference, release
from op_cases import IKCONV_GRAD_NAMES, atom_bank_case, ikconv_case, ikconv_run, rel_err, window_mask

SHAPES = [(2, 3, 9, 7, 3, 4, 3), (1, 2, 5, 6, 9, 2, 4), (1, 3, 1, 1, 1, 1, 3), (2, 3, 16, 16, 7, 10, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reference_equals_release_computation(shape):
    B, C, H, W, G, M, O = shape
    case = ikconv_case(B, C, H, W, G, M, O)
    y, g = ikconv_run(case, "reference")
    y_rel, g_rel = ikconv_run(case, None, fn=release.release_inverse_kernel_conv)
    assert rel_err(y, y_rel) < 1e-12
    for k in IKCONV_GRAD_NAMES:
        assert rel_err(g[k], g_rel[k]) < 1e-12, k


def test_explicit_backward_formulas_equal_autograd():
    case = ikconv_case(2, 3, 8, 7, 4, 3, bias=False)
    args = {k: case[k].clone().requires_grad_() for k in ("x", "atoms", "scale", "basis", "weight")}
    y = reference.ikconv_forward(*args.values(), None, True)
    gy = torch.randn_like(y)
    auto = torch.autograd.grad(y, list(args.values()), gy)
    dx, datoms, dscale, dbasis, dweight, dbias = reference.ikconv_backward(gy, *(case[k] for k in args), True, True)
    for name, got, want in zip(args, (dx, datoms, dscale, dbasis, dweight), auto):
        assert rel_err(got, want) < 1e-12, name
    assert rel_err(dbias, gy.sum((0, 2, 3))) < 1e-12


def test_atom_bank_backward_formulas_equal_autograd():
    case = atom_bank_case(3, 4, Hd=16)
    params = {k: case[k].clone().requires_grad_() for k in ("w1", "b1", "w2", "b2", "w3", "omega")}
    a = reference.atom_bank_forward(case["coords"], case["mask"], *params.values())
    ga = torch.randn_like(a)
    auto = torch.autograd.grad(a, list(params.values()), ga)
    explicit = reference.atom_bank_backward(ga, case["coords"], case["mask"], *(case[k] for k in params))
    for name, got, want in zip(params, explicit, auto):
        assert rel_err(got, want) < 1e-12, name


def test_atom_bank_equals_per_atom_mlp_calls():
    """One batched evaluation gives the release's G*M separate MLP calls, zero outside each window."""
    from inik_fast import INIKNet, INIKNetConfig

    torch.manual_seed(0)
    model = INIKNet(INIKNetConfig(base_ch=4, num_res_unet=0, num_res_lstm=0, max_kernel_size=9, basis_num=5)).double()
    bank = model.inr_conv("reference")
    per_call = release.release_atoms(model.inr_conv, 4, "polar")
    assert rel_err(bank, per_call) < 1e-13
    outside = bank * (model.inr_conv.mask[:, None] == 0)
    assert outside.abs().max() == 0


@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_constant_selections_reduce_to_conv2d(backend):
    """With scale and basis constant over the image, the op is one conv2d with the mixed kernel."""
    B, C, H, W, G, M, O = 2, 3, 11, 9, 3, 4, 2
    case = ikconv_case(B, C, H, W, G, M, O, residual=False)
    case["atoms"] = case["atoms"] * window_mask(G)  # the mixed kernel below sums whole K x K atoms
    s = torch.rand(G, dtype=torch.float64)
    b = torch.randn(M, dtype=torch.float64)
    scale = s.view(1, G, 1, 1).expand(B, G, H, W)
    basis = b.view(1, M, 1, 1).expand(B, M, H, W)
    # kernel[o, c] = sum_{g,m} W[o,g,c,m] s_g b_m atom_{g,m}
    kernel = torch.einsum("ogcm,g,m,gmij->ocij", case["weight"], s, b, case["atoms"])
    want = F.conv2d(case["x"], kernel, case["bias"], padding=G)
    got = ops.inverse_kernel_conv(case["x"], case["atoms"], scale, basis, case["weight"], case["bias"],
                                  residual=False, backend=backend)
    assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_atoms_outside_windows_are_ignored(backend):
    """Each group uses only its own window: entries outside it change neither y nor the other
    gradients, and get a zero gradient. (test_backend_ops.py covers the GPU backends: its cases
    have nonzero atoms outside the windows.)"""
    case = ikconv_case(1, 3, 8, 8, 3, 2)
    inside = window_mask(3).expand_as(case["atoms"]) != 0
    y0, g0 = ikconv_run(dict(case, atoms=torch.where(inside, case["atoms"], 0.0)), backend)
    y1, g1 = ikconv_run(case, backend)
    assert (case["atoms"][~inside] != 0).all()
    assert torch.equal(y0, y1)
    assert (g1["atoms"][~inside] == 0).all()
    for k in g0:
        assert torch.equal(g0[k], g1[k]), k
