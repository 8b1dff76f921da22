"""INIKNet against the release's own outputs and gradients (tests/fixtures, and the release
config from ../shared/fixtures when present), state-dict compatibility, sizes, caching."""
import pytest
import torch

from inik_fast import INIKNet, INIKNetConfig, backends, ops
from inik_fast.release import ReleaseINIKNet, build_model
from op_cases import rel_err

# float64 to 1e-12: measured at most 9e-15; rounding the 9/k^2 atom factors to float32 gives 1e-9.
F64_TOL = 1e-12


def usable(backend):
    reasons = [] if backend in ("auto", "release") else backends.not_supported_reasons(backend, "cpu", torch.float64)
    if reasons:
        pytest.skip(f"{backend}: {'; '.join(reasons)}")


def run_fixture(fx, backend, dtype):
    model = build_model(INIKNetConfig.from_dict(fx["config"]), backend).to(dtype)
    model.load_state_dict(fx["state_dict"], strict=True)
    x = fx["input"].to(dtype).clone().requires_grad_()
    outs = model(x)
    loss = sum((o * r.to(dtype)).sum() for o, r in zip(outs, fx["output_cotangents"]))
    loss.backward()
    return model, outs, x.grad


def grads_rel_norm(model, fx):
    """Relative norm of all parameter gradients together (float32 single tensors can be off by 1e-2)."""
    num = sum((p.grad.double() - fx["param_grads"][n]).square().sum() for n, p in model.named_parameters())
    den = sum(g.square().sum() for g in fx["param_grads"].values())
    return (num / den).sqrt().item()


@pytest.mark.parametrize("backend", ["reference", "cpu", "auto", "release"])
def test_release_fixture_float64(release_fixture, backend):
    usable(backend)
    fx = release_fixture
    model, outs, xgrad = run_fixture(fx, backend, torch.float64)
    assert isinstance(model, ReleaseINIKNet) == (backend == "release")
    for o, r in zip(outs, fx["outputs"]):
        assert rel_err(o, r) < F64_TOL
    assert rel_err(xgrad, fx["input_grad"]) < F64_TOL
    assert [n for n, _ in model.named_parameters()] == list(fx["param_grads"])
    for n, p in model.named_parameters():
        assert rel_err(p.grad, fx["param_grads"][n]) < F64_TOL, n
    assert rel_err(model.atoms(), fx["atoms"]) < F64_TOL


def test_release_fixture_float32(release_fixture):
    fx = release_fixture
    model, outs, xgrad = run_fixture(fx, "auto", torch.float32)
    for o, r in zip(outs, fx["outputs"]):
        assert rel_err(o, r) < 1e-5
    assert (xgrad.double() - fx["input_grad"]).norm() / fx["input_grad"].norm() < 1e-4
    assert grads_rel_norm(model, fx) < 1e-4


@pytest.mark.parametrize("backend", ["reference", "cpu", "auto"])
def test_op_level_fixture(release_fixture, backend):
    usable(backend)
    fx = release_fixture
    cfg = INIKNetConfig.from_dict(fx["config"])
    C, G, M = cfg.in_ch, cfg.num_groups, cfg.basis_num
    weight = fx["state_dict"]["sum.weight"].view(C, G + 1, C, M)[:, 1:]
    for s in range(3):
        y = ops.inverse_kernel_conv(fx["pyramid_inputs"][s], fx["atoms"], fx["scale_selects"][s][:, 1:],
                                    fx["basis_selects"][s], weight, fx["state_dict"]["sum.bias"], residual=True,
                                    backend=backend)
        assert rel_err(y, fx["outputs"][s]) < F64_TOL


def test_state_dict_is_the_release_one(release_fixture):
    model = INIKNet(INIKNetConfig.from_dict(release_fixture["config"]))
    sd = model.state_dict()
    assert list(sd) == list(release_fixture["state_dict"])  # the release's key order
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in release_fixture["state_dict"].items()}
    assert sum(p.numel() for p in model.parameters()) == release_fixture["n_params"]


def test_default_config_is_the_release_one(official_fixture):
    assert INIKNetConfig() == INIKNetConfig.from_dict(official_fixture["config"])


def test_truncated_state_dict_is_refused(release_fixture):
    sd = dict(release_fixture["state_dict"])
    sd.pop("sum.bias")
    with pytest.raises(RuntimeError, match="sum.bias"):
        INIKNet(INIKNetConfig.from_dict(release_fixture["config"])).load_state_dict(sd, strict=True)


SMALL = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=3, max_kernel_size=7)


@pytest.mark.parametrize("hw", [(1, 1), (17, 23), (40, 33), (64, 48)])
def test_any_size_is_padded_and_cropped(hw):
    torch.manual_seed(0)
    model = INIKNet(SMALL).eval()
    H, W = hw
    with torch.no_grad():
        outs = model(torch.rand(2, 3, H, W))
    assert [tuple(o.shape[-2:]) for o in outs] == [(-(-H // 4), -(-W // 4)), (-(-H // 2), -(-W // 2)), (H, W)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_sizes_divisible_by_16_take_the_release_path_unpadded(monkeypatch):
    import inik_fast.model as model_module

    def no_padding(*a, **k):
        raise AssertionError("a 64x48 input must not be padded")

    monkeypatch.setattr(model_module, "_pad", no_padding)
    torch.manual_seed(0)
    model = INIKNet(SMALL, backend="reference").double().eval()
    x = torch.rand(1, 3, 64, 48, dtype=torch.float64)
    with torch.no_grad():
        outs = model(x)
        ref = ReleaseINIKNet(SMALL).double().eval()
        ref.load_state_dict(model.state_dict())
        for o, r in zip(outs, ref(x)):
            assert rel_err(o, r) < 1e-12


def test_atom_bank_once_per_forward_and_in_place_updates_are_seen(monkeypatch):
    """EMA and weight averaging write parameters through `.data`, which bumps no version counter:
    the next eval forward must still use the new weights."""
    torch.manual_seed(0)
    model = INIKNet(SMALL).eval()
    calls = []
    real = ops.atom_bank
    monkeypatch.setattr(ops, "atom_bank", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)[2]
        assert len(calls) == 1  # one bank shared by the three scales
        for p in model.inr_conv.parameters():
            p.data.copy_(p.data * 1.1)
        after = model(x)[2]
        fresh = INIKNet(SMALL).eval()
        fresh.load_state_dict(model.state_dict())
        expected = fresh(x)[2]
    assert not torch.equal(before, expected)
    assert torch.equal(after, expected)


def test_model_built_in_inference_mode_runs():
    """As in a serving function; the eval-mode atom cache's version key crashed here."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        model = INIKNet(SMALL).eval()
        got = [model(x)[2] for _ in range(2)]
    plain = INIKNet(SMALL).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = plain(x)[2]
    assert all(torch.equal(g, expected) for g in got)


def test_bad_inputs_give_one_line_errors():
    model = INIKNet(SMALL)
    for bad, match in [
        (torch.rand(3, 32, 32), r"x must be \[B, 3, H, W\], got \[3, 32, 32\]"),
        (torch.rand(1, 4, 32, 32), r"x must be \[B, 3, H, W\]"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "floating-point image"),
        ([[0.0]], "must be a torch.Tensor"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match) as e:
            model(bad)
        assert "\n" not in str(e.value)
    for backend in ("nope", "release"):  # the release baseline is ReleaseINIKNet, not a backend
        with pytest.raises(ValueError, match=f"backend='{backend}'"):
            INIKNet(SMALL, backend=backend)
    with pytest.raises(ValueError, match="needs atoms='inr'"):
        build_model(INIKNetConfig(atoms="free"), "release")
