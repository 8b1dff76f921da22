"""The whole model under torch.compile(fullgraph=True), torch.export and AOTInductor: eval,
inference_mode and training (every parameter gradient against eager).

Inductor compiles the `cpu` backend, whose custom ops it must lower. The `reference` backend is
plain PyTorch: Dynamo and AOTAutograd (`aot_eager`) trace it fullgraph and check its gradients,
and Inductor's C++ code generation, minutes per graph on 2 cores, would test only torch.
The tests share one config and image size, so Inductor's cache reuses graphs among them; the
CLI's `--compile` tests (tests/test_cli.py) take them too, compiled with `aot_eager`."""
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from inik_fast import INIKNet, INIKNetConfig, backends
from inik_fast import model as model_module
from op_cases import rel_err

pytestmark = pytest.mark.slow

SMALL = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=3, max_kernel_size=7)
SIZE = 48  # tests/test_cli.py's --compile runs use these windows and crops
COMPILERS = [("cpu", "inductor"), ("reference", "aot_eager")]  # triton runs on CPU tensors only in its interpreter, which Inductor does not compile


def small_model(backend, dtype=torch.float32):
    reasons = backends.not_supported_reasons(backend, "cpu", dtype)
    if reasons:
        pytest.skip(f"{backend}: {'; '.join(reasons)}")
    torch.manual_seed(0)
    return INIKNet(SMALL, backend=backend).to(dtype), torch.rand(1, 3, SIZE, SIZE, dtype=dtype)


def custom_ops(graph) -> set[str]:
    return {str(n.target).split(".")[1] for n in graph.nodes if n.op == "call_function" and "inik_fast" in str(n.target)}


def fake_reflect_pad_keeps_channels_last() -> bool:
    x = torch.empty(1, 2, 4, 4).contiguous(memory_format=torch.channels_last)
    with FakeTensorMode() as mode:
        return F.pad(mode.from_tensor(x), [1] * 4, mode="reflect").is_contiguous(memory_format=torch.channels_last)


# The ops an export of the cpu backend's model holds. The one-pass LSTM gates need channels_last
# maps: torch 2.11's fake reflect padding returns NCHW from a channels_last input (its eager one
# does not), so there an export traces the trunk's eager gates instead.
EXPORTED_OPS = {"atom_bank_forward", "ikconv_forward"} | ({"lstm_gates"} if fake_reflect_pad_keeps_channels_last() else set())


@pytest.mark.parametrize("backend,compiler", COMPILERS)
def test_compiled_eval_and_inference_mode(backend, compiler):
    model, x = small_model(backend)
    model.eval()
    compiled = torch.compile(model, fullgraph=True, backend=compiler)
    with torch.no_grad():
        expected = model(x)
        got = compiled(x)
    with torch.inference_mode():
        got_inference = compiled(x)
    for g, gi, e in zip(got, got_inference, expected):
        assert rel_err(g, e) < 1e-5
        assert rel_err(gi, e) < 1e-5


def test_compiled_model_takes_new_image_sizes():
    """A second size recompiles with dynamic shapes (as `deblur --compile` does for each tile
    shape): the ops' argument checks must not format SymInts on that path, or fullgraph fails.
    That is Dynamo's tracing, the same for every compiler; the second size is large enough for
    the trunk's border-strip convolutions."""
    model, _ = small_model("cpu")
    model.eval()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for hw in ((32, 48), (96, 112)):
            x = torch.rand(1, 3, *hw)
            assert rel_err(compiled(x)[-1], model(x)[-1]) < 1e-5


def test_compiled_training_is_refused_on_torch_2_11(monkeypatch):
    """On torch 2.11 (the flag forced on here, so that any torch runs the check): a compiled
    forward with gradients enabled raises while Dynamo traces it; under torch.no_grad() it
    compiles and runs; torch.export, which compiles no backward, is not refused."""
    monkeypatch.setattr(model_module, "_COMPILED_BACKWARD_BROKEN", True)
    torch._dynamo.reset()
    try:
        model, x = small_model("cpu")
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        with pytest.raises(Exception, match="torch 2.11's torch.compile gives wrong parameter gradients"):
            compiled(x)
        model.eval()
        with torch.no_grad():
            for g, e in zip(compiled(x), model(x)):
                assert rel_err(g, e) < 1e-5
        assert custom_ops(torch.export.export(model, (x,)).graph) == EXPORTED_OPS
    finally:
        torch._dynamo.reset()


@pytest.mark.skipif(model_module._COMPILED_BACKWARD_BROKEN, reason="torch 2.11's Inductor: refused, see above")
@pytest.mark.parametrize("backend,compiler", COMPILERS)
def test_compiled_training_gradients_match_eager(backend, compiler):
    model, x = small_model(backend)
    gen = torch.Generator().manual_seed(1)
    cot = [torch.randn(o.shape, generator=gen) for o in model(x)]
    expected = model(x)
    sum((o * c).sum() for o, c in zip(expected, cot)).backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    got = torch.compile(model, fullgraph=True, backend=compiler)(x)
    for g, e in zip(got, expected):
        assert rel_err(g, e) < 1e-5
    sum((o * c).sum() for o, c in zip(got, cot)).backward()
    for n, p in model.named_parameters():
        assert rel_err(p.grad, eager_grads[n]) < 1e-4, n


def test_export_holds_the_custom_ops():
    model, x = small_model("cpu")
    model.eval()
    ep = torch.export.export(model, (x,))
    assert custom_ops(ep.graph) == EXPORTED_OPS
    with torch.no_grad():
        for g, e in zip(ep.module()(x), model(x)):
            assert rel_err(g, e) < 1e-6


def test_aoti_package_runs_the_cpu_op(tmp_path):
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("AOTInductor needs a C++ compiler")
    model, x = small_model("cpu")
    model.eval()
    ep = torch.export.export(model, (x,))
    path = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp_path / "iniknet.pt2"))
    loaded = torch._inductor.aoti_load_package(path)
    with torch.no_grad():
        for g, e in zip(loaded(x), model(x)):
            assert rel_err(g, e) < 1e-5
