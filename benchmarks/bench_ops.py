"""The two ops, every available backend beside the release's computation (one group per size).

Op inputs rotate among enough sets to stream more than twice the last-level cache per cycle.
"""
import functools

import torch

import measure
import workloads

TRAIN_GRADS = ("atoms", "scale", "basis", "weight", "bias")


def test_ikconv_forward(benchmark, case):
    sets = workloads.input_sets(functools.partial(workloads.ikconv_inputs, case), case.device)

    def step(i):
        t = sets[i]
        with torch.no_grad():
            return workloads.ikconv(case.backend, t["x"], t["atoms"], t["scale"], t["basis"], t["weight"], t["bias"])

    measure.run(benchmark, case, step, n_sets=len(sets))


def _train_step(case, x_grad: bool):
    """Forward, then the gradients of every input that needs one for a fixed cotangent."""
    leaves = (("x",) if x_grad else ()) + TRAIN_GRADS
    sets = workloads.input_sets(functools.partial(workloads.ikconv_inputs, case, grads=leaves), case.device)

    def step(i):
        t = sets[i]
        y = workloads.ikconv(case.backend, t["x"], t["atoms"], t["scale"], t["basis"], t["weight"], t["bias"])
        return torch.autograd.grad(y, [t[k] for k in leaves], t["cotangent"])

    return step, len(sets)


def test_ikconv_train(benchmark, case):
    step, n = _train_step(case, x_grad=False)
    measure.run(benchmark, case, step, n_sets=n)


def test_ikconv_train_dx(benchmark, case):
    step, n = _train_step(case, x_grad=True)
    measure.run(benchmark, case, step, n_sets=n)


def test_atom_bank(benchmark, case):
    module = workloads.atom_module(case)
    params = list(module.parameters())
    G, M = case.config.num_groups, case.config.basis_num
    cotangent = torch.randn(G, M, 2 * G + 1, 2 * G + 1, device=case.device, dtype=case.dtype)

    def step(i):
        return torch.autograd.grad(workloads.atoms_of(module, case), params, cotangent)

    measure.run(benchmark, case, step)
