"""The two ops, every available backend beside the release's computation (one group per size).

Op inputs rotate among enough sets to stream more than twice the last-level cache per cycle. Each
backend's rounds alternate with rounds of the release on the same inputs (measure.run).
"""
import dataclasses
import functools

import torch

import measure
import workloads

TRAIN_GRADS = ("atoms", "scale", "basis", "weight", "bias")


def _steps(case, make):
    """make(backend) -> step(i); the case's step and, unless it is the release, the release's."""
    return make(case.backend), None if case.backend == "release" else make("release")


def test_ikconv_forward(benchmark, case):
    sets = workloads.input_sets(functools.partial(workloads.ikconv_inputs, case), case.device)

    def make(backend):
        def step(i):
            t = sets[i]
            with torch.no_grad():
                return workloads.ikconv(backend, t["x"], t["atoms"], t["scale"], t["basis"], t["weight"], t["bias"])

        return step

    step, release_step = _steps(case, make)
    measure.run(benchmark, case, step, n_sets=len(sets), release_step=release_step)


def _train(benchmark, case, x_grad: bool):
    """Forward, then the gradients of every input that needs one for a fixed cotangent."""
    leaves = (("x",) if x_grad else ()) + TRAIN_GRADS
    sets = workloads.input_sets(functools.partial(workloads.ikconv_inputs, case, grads=leaves), case.device)

    def make(backend):
        def step(i):
            t = sets[i]
            y = workloads.ikconv(backend, t["x"], t["atoms"], t["scale"], t["basis"], t["weight"], t["bias"])
            return torch.autograd.grad(y, [t[k] for k in leaves], t["cotangent"])

        return step

    step, release_step = _steps(case, make)
    measure.run(benchmark, case, step, n_sets=len(sets), release_step=release_step)


def test_ikconv_train(benchmark, case):
    _train(benchmark, case, x_grad=False)


def test_ikconv_train_dx(benchmark, case):
    _train(benchmark, case, x_grad=True)


def test_atom_bank(benchmark, case):
    module = workloads.atom_module(case)
    params = list(module.parameters())
    G, M = case.config.num_groups, case.config.basis_num
    cotangent = torch.randn(G, M, 2 * G + 1, 2 * G + 1, device=case.device, dtype=case.dtype)

    def make(backend):
        twin = dataclasses.replace(case, backend=backend)
        return lambda i: torch.autograd.grad(workloads.atoms_of(module, twin), params, cotangent)

    step, release_step = _steps(case, make)
    measure.run(benchmark, case, step, release_step=release_step)
