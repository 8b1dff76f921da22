"""INIKNetConfig: release defaults, JSON round trips, validation, and every ablation option."""
import json

import pytest
import torch

from inik_fast import INIKNet, INIKNetConfig

RELEASE_JSON = {"model_name": "INIKNet", "in_ch": 3, "base_ch": 32, "num_res_unet": 2, "num_res_lstm": 2,
                "basis_num": 10, "max_kernel_size": 15, "w_max": 12, "w_min": 2, "learnable_freq": True}


def test_defaults_are_the_release_config(tmp_path):
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(RELEASE_JSON))
    cfg = INIKNetConfig.from_json(path)
    assert cfg == INIKNetConfig()
    assert cfg.num_groups == 7 and cfg.coord_dim == 3
    assert cfg.omegas() == pytest.approx([2 + 10 / 9 * i for i in range(10)])


def test_json_round_trip(tmp_path):
    cfg = INIKNetConfig(basis_num=4, max_kernel_size=9, coords="grid", atoms="free", learnable_freq=False)
    cfg.to_json(tmp_path / "c.json")
    assert INIKNetConfig.from_json(tmp_path / "c.json") == cfg


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(max_kernel_size=14), "max_kernel_size"),
        (dict(max_kernel_size=21), "max_kernel_size"),
        (dict(max_kernel_size=1), "max_kernel_size"),
        (dict(basis_num=0), "basis_num"),
        (dict(basis_num=17), "basis_num"),
        (dict(coords="cartesian"), "coords"),
        (dict(atoms="mlp"), "atoms"),
        (dict(in_ch=0), "in_ch"),
        (dict(base_ch=2.5), "base_ch"),
        (dict(learnable_freq="yes"), "learnable_freq"),
        (dict(model_name="MIMOUNet"), "model_name"),
        (dict(inr_hidden=256), "inr_hidden"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"INIKNetConfig\.{field}=") as e:
        INIKNetConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_json_files(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        INIKNetConfig.from_json(p)
    p.write_text(json.dumps({**RELEASE_JSON, "dropout": 0.1}))
    with pytest.raises(ValueError, match=r"unknown keys \['dropout'\]"):
        INIKNetConfig.from_json(p)
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        INIKNetConfig.from_json(p)


SMALL = dict(base_ch=8, num_res_unet=1, num_res_lstm=1)
ABLATIONS = (
    [dict(max_kernel_size=k, basis_num=2) for k in (3, 7, 19)]
    + [dict(basis_num=m, max_kernel_size=5) for m in (1, 2, 16)]
    + [dict(coords="grid", basis_num=3, max_kernel_size=7), dict(atoms="free", basis_num=3, max_kernel_size=7),
       dict(learnable_freq=False, basis_num=3, max_kernel_size=5), dict(num_res_unet=0, num_res_lstm=0, basis_num=2,
                                                                         max_kernel_size=3)]
)


@pytest.mark.parametrize("opts", ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_option_builds_runs_and_round_trips(opts, tmp_path):
    cfg = INIKNetConfig(**{**SMALL, **opts})
    cfg.to_json(tmp_path / "c.json")
    assert INIKNetConfig.from_json(tmp_path / "c.json") == cfg
    torch.manual_seed(0)
    model = INIKNet(cfg, backend="reference")
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 32, 32)]
    sum(o.square().mean() for o in outs).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    atom_grads = [p.grad for p in model.inr_conv.parameters()]
    assert any(g.abs().sum() > 0 for g in atom_grads)
    has_omega = any(n.endswith("w0") for n in model.state_dict())
    assert has_omega == (cfg.atoms == "inr" and cfg.learnable_freq)
