"""The release's own float64 outputs and gradients reproduced on a GPU by the fused GPU backends:
the whole model (U-Net and LSTMs on cuDNN, atom bank and inverse-kernel conv on the backend) in
float64, and in float32 to the same bounds as the CPU tests."""
import pytest
import torch

from inik_fast import INIKNet, INIKNetConfig, backends
from op_cases import rel_err

gpu = pytest.mark.gpu


def run_on_gpu(fx, backend, dtype):
    # cast first: float64 values loaded into float32 parameters would be rounded (1e-8 at the outputs)
    model = INIKNet(INIKNetConfig.from_dict(fx["config"]), backend=backend).to("cuda", dtype)
    model.load_state_dict(fx["state_dict"], strict=True)
    x = fx["input"].to("cuda", dtype).clone().requires_grad_()
    outs = model(x)
    loss = sum((o * r.to("cuda", dtype)).sum() for o, r in zip(outs, fx["output_cotangents"]))
    loss.backward()
    return model, outs, x.grad


@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_release_fixture_on_the_gpu(release_fixture, backend, no_tf32):
    reasons = backends.not_supported_reasons(backend, "cuda", torch.float64)
    if reasons:
        pytest.skip(f"{backend}: {'; '.join(reasons)}")
    fx = release_fixture
    model, outs, xgrad = run_on_gpu(fx, backend, torch.float64)
    for o, r in zip(outs, fx["outputs"]):
        assert rel_err(o.cpu(), r) < 1e-10
    assert rel_err(xgrad.cpu(), fx["input_grad"]) < 1e-10
    for n, p in model.named_parameters():
        assert rel_err(p.grad.cpu(), fx["param_grads"][n]) < 1e-10, n
    assert rel_err(model.atoms().cpu(), fx["atoms"]) < 1e-12

    model, outs, xgrad = run_on_gpu(fx, backend, torch.float32)
    for o, r in zip(outs, fx["outputs"]):
        assert rel_err(o.double().cpu(), r) < 1e-5
    assert rel_err(xgrad.double().cpu(), fx["input_grad"]) < 1e-4
