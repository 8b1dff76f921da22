"""What the benchmarks run: the size profiles, one Case per (suite, shape, dtype, backend), and
the inputs, models and steps of each suite.

Every case of a group runs the same work; "release" is the release's own computation
(`inik_fast.release`), measured in the same run as every backend that
`inik_fast.available_backends(device, dtype)` reports. `steps(case)` gives the case's step and
the release's step for the same work, which `measure` times in alternating rounds.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import backends, ops, release
from ..atoms import INRAtoms, coords_and_mask
from ..config import INIKNetConfig
from ..model import INIKNet

F32, BF16 = torch.float32, torch.bfloat16
RELEASE = INIKNetConfig()  # G = 7 size groups, M = 10 atoms, C = 3, Hd = 64
# a small model for the plumbing checks: G = 2, M = 3, a narrow U-Net (the Triton interpreter is slow)
SMALL = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=3, max_kernel_size=5, inr_hidden=16)

SUITE_TITLES = {
    "ikconv_forward": "inverse_kernel_conv forward",
    "ikconv_train": "inverse_kernel_conv forward+backward as in training (grads of atoms, scale, basis, weight, bias)",
    "ikconv_train_dx": "inverse_kernel_conv forward+backward with the image gradient too",
    "atom_bank": "atom_bank forward+backward (release: G*M separate MLP calls)",
    "model_eval": "INIKNet eval forward (inference_mode; bf16 = autocast)",
    "model_eval_cast": "INIKNet eval forward, the model and image cast to the dtype as `deblur --precision` runs them (the release in float32)",
    "train_step": "INIKNet training step (forward, 3-scale MSE, backward, Adam; bf16 = autocast)",
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes (B, H, W, dtype) per suite, the model config, and how many rounds to time."""

    config: INIKNetConfig
    ikconv_forward: tuple
    ikconv_train: tuple
    ikconv_train_dx: tuple
    atom_bank: tuple  # dtypes
    model_eval: tuple
    model_eval_cast: tuple
    train_step: tuple
    warmup: int  # untimed calls first (Triton compiles and autotunes in them)
    target_s: float  # time each entry for about this long ...
    min_rounds: int  # ... in at least / at most this many rounds
    max_rounds: int


PROFILES = {
    # the project's CPU goals; the release model takes seconds a call here, so few rounds. 1024^2
    # is `deblur`'s goal size. The training step is the release's batch (B=4 at 256^2), as on the GPU.
    "cpu": Profile(
        config=RELEASE,
        ikconv_forward=((1, 512, 512, F32), (1, 256, 256, F32)),
        ikconv_train=((1, 512, 512, F32), (1, 256, 256, F32)),
        ikconv_train_dx=((1, 256, 256, F32),),
        atom_bank=(F32,),
        model_eval=((1, 512, 512, F32), (1, 1024, 1024, F32), (1, 512, 512, BF16)),
        model_eval_cast=((1, 512, 512, BF16),),
        train_step=((4, 256, 256, F32), (4, 256, 256, BF16)),
        warmup=1, target_s=3.0, min_rounds=5, max_rounds=20,
    ),
    # a DPDD test image (1680x1120) for inference, the release's training batch for training
    "cuda": Profile(
        config=RELEASE,
        ikconv_forward=((1, 1120, 1680, F32),),
        ikconv_train=((4, 256, 256, F32), (4, 256, 256, BF16)),
        ikconv_train_dx=((4, 256, 256, F32),),
        atom_bank=(F32,),
        model_eval=((1, 1120, 1680, F32), (1, 1120, 1680, BF16)),
        model_eval_cast=((1, 1120, 1680, BF16),),
        train_step=((4, 256, 256, F32), (4, 256, 256, BF16)),
        warmup=3, target_s=1.0, min_rounds=5, max_rounds=50,
    ),
    # `inik-fast bench`'s default: every suite on the release model at sizes that take about a
    # minute on 2 CPU cores
    "quick": Profile(
        config=RELEASE,
        ikconv_forward=((1, 256, 256, F32),),
        ikconv_train=((1, 256, 256, F32),),
        ikconv_train_dx=((1, 128, 128, F32),),
        atom_bank=(F32,),
        model_eval=((1, 128, 128, F32), (1, 128, 128, BF16)),
        model_eval_cast=((1, 128, 128, BF16),),
        train_step=((1, 128, 128, F32),),
        warmup=1, target_s=0.0, min_rounds=5, max_rounds=5,
    ),
    # plumbing checks (gpu_check.sh --cpu-dry-run, CI): one round of tiny shapes
    "tiny": Profile(
        config=SMALL,
        ikconv_forward=((1, 24, 40, F32),),
        ikconv_train=((2, 16, 16, F32),),
        ikconv_train_dx=((2, 16, 16, F32),),
        atom_bank=(F32,),
        model_eval=((1, 32, 32, F32), (1, 32, 32, BF16)),  # bf16 autocast's plumbing, the step's too
        model_eval_cast=((1, 32, 32, BF16),),
        train_step=((1, 32, 32, F32),),
        warmup=0, target_s=0.0, min_rounds=1, max_rounds=1,
    ),
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclasses.dataclass(frozen=True)
class Case:
    suite: str
    backend: str
    device: str
    dtype: torch.dtype
    shape: tuple  # (B, C, H, W) of the image; () for the atom bank
    profile: Profile

    def __repr__(self) -> str:  # pytest-benchmark stores it in the JSON's params
        return f"Case({self.suite}, {self.id})"

    @property
    def config(self) -> INIKNetConfig:
        return self.profile.config

    @property
    def size(self) -> str:
        return "x".join(map(str, (self.shape[0], *self.shape[2:]))) if self.shape else "bank"

    @property
    def id(self) -> str:
        return f"{dtype_name(self.dtype)}-{self.size}-{self.backend}"

    @property
    def shape_text(self) -> str:
        cfg = self.config
        ops_part = f"G={cfg.num_groups} M={cfg.basis_num}"
        if not self.shape:
            return f"{ops_part} Hd={cfg.inr_hidden}"
        B, C, H, W = self.shape
        if self.suite.startswith("ikconv"):
            return f"B={B} C={C} {H}x{W}, {ops_part}"
        return f"B={B} C={C} {H}x{W}" + ("" if cfg == RELEASE else f", small model ({ops_part}, base_ch={cfg.base_ch})")

    @property
    def group(self) -> str:
        return f"{SUITE_TITLES[self.suite]} | {dtype_name(self.dtype)} | {self.shape_text}"


def cases(suite: str, device: str, profile_name: str) -> list[Case]:
    """Every case of `suite`: for each size of the profile, "release" then each available backend."""
    profile = PROFILES[profile_name]
    out = []
    for entry in getattr(profile, suite):
        if suite == "atom_bank":
            dtype, shape = entry, ()
        else:
            B, H, W, dtype = entry
            shape = (B, profile.config.in_ch, H, W)
        for backend in ["release", *backends.available_backends(device, dtype)]:
            out.append(Case(suite, backend, device, dtype, shape, profile))
    return out


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def cache_bytes(device: str) -> int:
    """The last-level cache that input rotation must defeat: the GPU's L2, the CPU's L3."""
    if torch.device(device).type == "cuda":
        return getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20)
    for level in (3, 2):
        try:
            text = open(f"/sys/devices/system/cpu/cpu0/cache/index{level}/size").read().strip()
            return int(text.rstrip("K")) * 1024 if text.endswith("K") else int(text.rstrip("M")) * 2**20
        except (OSError, ValueError):
            continue
    return 32 * 2**20


def input_sets(make, device: str, max_sets: int = 8) -> list[dict]:
    """Enough input sets made by make(seed) that cycling through them streams more than twice
    the last-level cache, so no timed call finds its inputs cached by the call before."""
    first = make(0)
    size = sum(t.numel() * t.element_size() for t in first.values() if isinstance(t, torch.Tensor))
    n = min(max_sets, max(1, math.ceil(2 * cache_bytes(device) / max(size, 1))))
    return [first] + [make(seed) for seed in range(1, n)]


def _randn(shape, gen, device, dtype=F32, s=1.0):
    return (torch.randn(shape, generator=gen, device=device) * s).to(dtype)


def ikconv_inputs(case: Case, seed: int, *, grads: tuple = ()) -> dict:
    """Inputs of inverse_kernel_conv as the model makes them (atoms zero outside their windows,
    scale a softmax over G+1 groups without the null one); the inputs named in `grads` require
    grad, and a cotangent for y comes with them."""
    B, C, H, W = case.shape
    G, M, dev = case.config.num_groups, case.config.basis_num, case.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    window = (coords_and_mask(G, case.config.coords)[1] > 0).to(device=dev, dtype=F32)
    t = dict(
        x=_randn((B, C, H, W), gen, dev, case.dtype),
        atoms=_randn((G, M, 2 * G + 1, 2 * G + 1), gen, dev, s=0.3) * window[:, None],
        scale=torch.softmax(_randn((B, G + 1, H, W), gen, dev), 1)[:, 1:].to(case.dtype),
        basis=_randn((B, M, H, W), gen, dev, case.dtype),
        weight=_randn((C, G, C, M), gen, dev, s=0.2),
        bias=_randn((C,), gen, dev),
    )
    for k in grads:
        t[k].requires_grad_(True)
    if grads:
        t["cotangent"] = _randn((B, C, H, W), gen, dev, case.dtype)
    return t


def ikconv(backend: str, x, atoms, scale, basis, weight, bias):
    """One call of the op by `backend`; "release" computes in x's dtype, as the release would."""
    if backend == "release":
        dt = x.dtype
        return release.release_inverse_kernel_conv(x, atoms.to(dt), scale, basis, weight.to(dt), bias.to(dt))
    return ops.inverse_kernel_conv(x, atoms, scale, basis, weight, bias, residual=True, backend=backend)


def atom_module(case: Case) -> INRAtoms:
    torch.manual_seed(0)
    return INRAtoms(case.config).to(device=case.device, dtype=case.dtype)


def atoms_of(module: INRAtoms, case: Case):
    if case.backend == "release":
        return release.release_atoms(module, case.config.num_groups, case.config.coords)
    return module(case.backend)


def model(case: Case) -> INIKNet:
    """The model in float32; a bf16/fp16 case runs it under autocast (see `precision`)."""
    torch.manual_seed(0)
    return release.build_model(case.config, case.backend).to(device=case.device)


def precision(case: Case):
    """Autocast to the case's dtype, or nothing for float32."""
    return torch.autocast(torch.device(case.device).type, dtype=case.dtype, enabled=case.dtype != F32)


def training_data(case: Case) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A blurry batch and its target resized to the model's three output scales (float32)."""
    gen = torch.Generator(device=case.device).manual_seed(0)
    x = torch.rand(case.shape, generator=gen, device=case.device)
    target = torch.rand(case.shape, generator=gen, device=case.device)
    scaled = [F.interpolate(target, scale_factor=f, mode="bilinear", align_corners=False) for f in (0.25, 0.5)]
    return x, [*scaled, target]


def train_loss(outs, targets):
    """MSE at each of the three scales: the release's loss without its FFT and perceptual terms."""
    return sum(F.mse_loss(o.float(), t) for o, t in zip(outs, targets))


# ---------------------------------------------------------------------------------------------
# steps: step(i) runs the case's work once on input set i
# ---------------------------------------------------------------------------------------------
Step = Callable[[int], Any]
TRAIN_GRADS = ("atoms", "scale", "basis", "weight", "bias")


@dataclasses.dataclass(frozen=True)
class Steps:
    step: Step  # the case's backend
    release_step: Step | None  # the same work by the release; None when the case is the release
    n_sets: int  # step(i) takes i in range(n_sets)


def steps(case: Case) -> Steps:
    """The case's step and the release's for the same inputs (made once, shared by both)."""
    make, n_sets = _SUITES[case.suite](case)
    return Steps(make(case.backend), None if case.backend == "release" else make("release"), n_sets)


def _ikconv_forward(case: Case):
    """Op inputs rotate among enough sets to stream more than twice the last-level cache."""
    sets = input_sets(functools.partial(ikconv_inputs, case), case.device)

    def make(backend):
        def step(i):
            t = sets[i]
            with torch.no_grad():
                return ikconv(backend, t["x"], t["atoms"], t["scale"], t["basis"], t["weight"], t["bias"])

        return step

    return make, len(sets)


def _ikconv_train(case: Case, x_grad: bool):
    """Forward, then the gradients of every input that needs one for a fixed cotangent."""
    leaves = (("x",) if x_grad else ()) + TRAIN_GRADS
    sets = input_sets(functools.partial(ikconv_inputs, case, grads=leaves), case.device)

    def make(backend):
        def step(i):
            t = sets[i]
            y = ikconv(backend, t["x"], t["atoms"], t["scale"], t["basis"], t["weight"], t["bias"])
            return torch.autograd.grad(y, [t[k] for k in leaves], t["cotangent"])

        return step

    return make, len(sets)


def _atom_bank(case: Case):
    module = atom_module(case)
    params = list(module.parameters())
    G, M = case.config.num_groups, case.config.basis_num
    cotangent = torch.randn(G, M, 2 * G + 1, 2 * G + 1, device=case.device, dtype=case.dtype)

    def make(backend):
        twin = dataclasses.replace(case, backend=backend)
        return lambda i: torch.autograd.grad(atoms_of(module, twin), params, cotangent)

    return make, 1


def _image(case: Case) -> torch.Tensor:
    """The eval workloads' image: uniform in [0, 1), seeded, float32."""
    return torch.rand(case.shape, generator=torch.Generator(case.device).manual_seed(0), device=case.device)


def _model_eval(case: Case):
    x = _image(case)

    def make(backend):
        twin = dataclasses.replace(case, backend=backend)
        net = model(twin).eval()

        def step(i):
            with torch.inference_mode(), precision(twin):
                return net(x)

        return step

    return make, 1


def _model_eval_cast(case: Case):
    """What `deblur --precision` runs: model.to(dtype) on an image of that dtype (the atoms stay
    float32 inside), against the release as users run it, in float32."""
    x = _image(case)

    def make(backend):
        dtype = F32 if backend == "release" else case.dtype
        net = model(dataclasses.replace(case, backend=backend)).eval().to(dtype)
        xd = x.to(dtype)

        def step(i):
            with torch.inference_mode():
                return net(xd)

        return step

    return make, 1


def _train_step(case: Case):
    x, targets = training_data(case)

    def make(backend):
        twin = dataclasses.replace(case, backend=backend)
        net = model(twin).train()
        opt = torch.optim.Adam(net.parameters(), lr=2e-4)  # the release's optimiser

        def step(i):
            opt.zero_grad(set_to_none=True)
            with precision(twin):
                loss = train_loss(net(x), targets)
            loss.backward()
            opt.step()
            return loss.detach()

        return step

    return make, 1


_SUITES = {
    "ikconv_forward": _ikconv_forward,
    "ikconv_train": functools.partial(_ikconv_train, x_grad=False),
    "ikconv_train_dx": functools.partial(_ikconv_train, x_grad=True),
    "atom_bank": _atom_bank,
    "model_eval": _model_eval,
    "model_eval_cast": _model_eval_cast,
    "train_step": _train_step,
}
