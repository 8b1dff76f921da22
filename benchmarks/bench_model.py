"""The whole model, every available backend beside the release's computation (backend "release")."""
import torch

import measure
import workloads


def test_model_eval(benchmark, case):
    net = workloads.model(case).eval()
    x = torch.rand(case.shape, generator=torch.Generator(case.device).manual_seed(0), device=case.device)

    def step(i):
        with torch.inference_mode(), workloads.precision(case):
            return net(x)

    measure.run(benchmark, case, step)


def test_train_step(benchmark, case):
    net = workloads.model(case).train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)  # the release's optimiser
    x, targets = workloads.training_data(case)

    def step(i):
        opt.zero_grad(set_to_none=True)
        with workloads.precision(case):
            loss = workloads.train_loss(net(x), targets)
        loss.backward()
        opt.step()
        return loss.detach()

    measure.run(benchmark, case, step)
