"""The whole model, every available backend beside the release's computation (backend "release");
each backend's rounds alternate with the release's (measure.run)."""
import dataclasses

import torch

import measure
import workloads


def _with_release(case, make):
    """make(case) -> step(i) for `case` and, unless it is the release, for its release twin."""
    release = None if case.backend == "release" else make(dataclasses.replace(case, backend="release"))
    return make(case), release


def test_model_eval(benchmark, case):
    x = torch.rand(case.shape, generator=torch.Generator(case.device).manual_seed(0), device=case.device)

    def make(c):
        net = workloads.model(c).eval()

        def step(i):
            with torch.inference_mode(), workloads.precision(c):
                return net(x)

        return step

    step, release_step = _with_release(case, make)
    measure.run(benchmark, case, step, release_step=release_step)


def test_train_step(benchmark, case):
    x, targets = workloads.training_data(case)

    def make(c):
        net = workloads.model(c).train()
        opt = torch.optim.Adam(net.parameters(), lr=2e-4)  # the release's optimiser

        def step(i):
            opt.zero_grad(set_to_none=True)
            with workloads.precision(c):
                loss = workloads.train_loss(net(x), targets)
            loss.backward()
            opt.step()
            return loss.detach()

        return step

    step, release_step = _with_release(case, make)
    measure.run(benchmark, case, step, release_step=release_step)
