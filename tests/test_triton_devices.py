"""The Triton launcher: each kernel runs on its tensors' device and that device's current stream, and
the deterministic backward with a pinned tile config."""
import contextlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from inik_fast import backends
from op_cases import IKCONV_GRAD_NAMES, atom_bank_case, atom_bank_run, cast, ikconv_case, ikconv_run, rel_err

gpu = pytest.mark.gpu


@pytest.fixture(scope="module")
def launch():
    reasons = backends.not_supported_reasons("triton", "cuda" if torch.cuda.is_available() else "cpu")
    if reasons:
        pytest.skip("; ".join(reasons))
    from inik_fast.kernels import launch

    return launch


def test_launch_is_guarded_with_the_tensors_device(launch, monkeypatch):
    """The GPU path of launch() on a CPU: fake tensors on cuda:1 while cuda:0 is current; the
    kernel must be launched while cuda:1 is the current device, and cuda:0 restored after."""
    current = [0]
    launched_on = []

    @contextlib.contextmanager
    def device(d):
        previous, current[0] = current[0], torch.device(d).index
        try:
            yield
        finally:
            current[0] = previous

    class Wrapped:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: launched_on.append(current[0])

    monkeypatch.setattr(launch, "INTERPRET", False)
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.library, "wrap_triton", lambda fn: Wrapped())
    with FakeTensorMode():
        x = torch.empty(4, device="cuda:1")
    launch.launch(object(), (1,), 7, x, x, BLOCK=16)
    assert launched_on == [1]
    assert current[0] == 0


def _check_on(device):
    """Forward and gradients of both ops with the Triton backend on `device`, against the float64
    reference on the CPU."""
    case = ikconv_case(2, 3, 37, 29, 3, 5)
    y_ref, g_ref = ikconv_run(case, "reference")
    y, g = ikconv_run(cast(case, torch.float32, device), "triton")
    assert y.device == torch.device(device)
    assert rel_err(y, y_ref) <= 1e-4
    for k in IKCONV_GRAD_NAMES:
        assert rel_err(g[k], g_ref[k]) <= 1e-4, k
    a_ref, ga_ref = atom_bank_run(atom_bank_case(2, 3, 16), "reference")
    a, ga = atom_bank_run(atom_bank_case(2, 3, 16, dtype=torch.float32, device=device), "triton")
    assert rel_err(a, a_ref) <= 1e-4
    for k, ref in ga_ref.items():
        assert rel_err(ga[k], ref) <= 1e-3, k


@gpu
def test_second_gpu_while_the_first_is_current(launch):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    with torch.cuda.device(0):
        _check_on("cuda:1")
        torch.cuda.synchronize(1)


@gpu
def test_kernels_are_ordered_on_a_side_stream(launch):
    """The inputs are written on a side stream after a long sleep there: a kernel launched on any
    other stream would read them before they are written."""
    case = ikconv_case(2, 3, 64, 64, 3, 5)
    y_ref, _ = ikconv_run(case, "reference")
    src = cast(case, torch.float32, "cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # ~50 ms of GPU cycles
        inputs = {k: (torch.zeros_like(v).copy_(v) if isinstance(v, torch.Tensor) else v) for k, v in src.items()}
        y, _ = ikconv_run(inputs, "triton")
        y_host = y.to("cpu", non_blocking=False)
    assert rel_err(y_host, y_ref) <= 1e-4


def test_pinned_launch_takes_the_first_tile_config(launch, monkeypatch):
    """The deterministic backward's launch on a GPU: the Autotuner's own kernel with GPU_TILES[0],
    never the autotuner's timed choice (which can differ between processes)."""
    calls = []

    class Wrapped:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((self.fn, kwargs))

    monkeypatch.setattr(launch, "INTERPRET", False)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.library, "wrap_triton", Wrapped)
    tuner = type("Autotuner", (), {"fn": "the jitted kernel"})()
    launch.launch(tuner, (1,), torch.zeros(1), tile=True, pinned=True, ATOMIC=False)
    first = launch.GPU_TILES[0]
    expected = {**first.kwargs, "num_warps": first.num_warps, "num_stages": first.num_stages, "ATOMIC": False}
    assert calls == [("the jitted kernel", expected)]
