"""`inik-fast bench`: a quick, self-contained timing of the two ops and the model per backend
(best of a few runs, milliseconds), with the speed-up over the reference backend. The
pytest-benchmark suites in benchmarks/ are the thorough measurements."""
from __future__ import annotations

import time

import torch

from . import backends, ops, release
from .config import INIKNetConfig
from .errors import UserError
from .evaluate import markdown_table
from .model import INIKNet

CASES = ("atom_bank fwd", "ikconv fwd", "ikconv fwd+bwd", "model fwd", "model fwd+bwd")
TINY = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=2, max_kernel_size=5)


def best_time(fn, repeat: int, device: torch.device) -> float:
    """Best wall time of `fn` over `repeat` runs after one warm-up, in seconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _cases(model: INIKNet, backend: str, size: int, batch: int):
    """name -> callable, for one backend."""
    cfg = model.config
    dev = next(model.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, cfg.in_ch, size, size, generator=g).to(dev)
    G, M = cfg.num_groups, cfg.basis_num
    scale = torch.softmax(torch.randn(batch, G + 1, size, size, generator=g), 1)[:, 1:].contiguous().to(dev)
    basis = torch.randn(batch, M, size, size, generator=g).to(dev)
    weight = model.sum.weight.detach().view(cfg.in_ch, G + 1, cfg.in_ch, M)[:, 1:].contiguous()
    bias = model.sum.bias.detach()
    cases = {}
    if backend != "release":
        inr = model.inr_conv
        atoms = inr(backend).detach()
        cases["atom_bank fwd"] = lambda: inr(backend)
        cases["ikconv fwd"] = lambda: ops.inverse_kernel_conv(x, atoms, scale, basis, weight, bias, backend=backend)

        def ikconv_fwd_bwd():
            xs = [t.clone().requires_grad_() for t in (x, atoms, scale, basis)]
            ops.inverse_kernel_conv(*xs, weight, bias, backend=backend).sum().backward()

        cases["ikconv fwd+bwd"] = ikconv_fwd_bwd
    net = release.build_model(cfg, backend).to(dev)
    net.load_state_dict(model.state_dict())

    def model_fwd():
        with torch.no_grad():
            net.eval()(x)

    def model_step():
        sum(o.mean() for o in net.train()(x)).backward()

    cases["model fwd"] = model_fwd
    cases["model fwd+bwd"] = model_step
    return cases


def run_bench(device="auto", size=128, batch=1, repeat=3, names=None, tiny=False) -> str:
    for flag, value in (("--size", size), ("--batch", batch), ("--repeat", repeat)):
        if value < 1:
            raise UserError(f"{flag} {value}: expected an integer >= 1")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    torch.manual_seed(0)
    model = INIKNet(TINY if tiny else INIKNetConfig(), backend="reference").to(device)
    names = names or ["release", *backends.available_backends(device)]
    for b in names:
        if b != "release":
            backends.resolve(b, device, torch.float32)  # a clear error for an unavailable backend
    times = {b: {k: best_time(fn, repeat, device) for k, fn in _cases(model, b, size, batch).items()} for b in names}
    keys = [k for k in CASES if any(k in t for t in times.values())]
    ref = times.get("reference", {})
    head = ["backend", *[f"{k} ms" for k in keys]]
    rows = []
    for b in names:
        cells = [b]
        for k in keys:
            if k not in times[b]:
                cells.append("-")
                continue
            ms = times[b][k] * 1e3
            cells.append(f"{ms:.2f}" + (f" ({ref[k] / times[b][k]:.1f}x)" if k in ref and b != "reference" else ""))
        rows.append(cells)
    title = (
        f"inik-fast bench: {device}, {'tiny' if tiny else 'release'} config, batch {batch}, {size}x{size}, "
        f"best of {repeat}; (Nx) = speed-up over reference"
    )
    return title + "\n" + markdown_table(head, rows)
