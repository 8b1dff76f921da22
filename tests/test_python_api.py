"""The Python API a user reaches for: from_pretrained, torch.hub, deblur_image / deblur_file,
read_image / write_image, and the synthetic Dataset."""
from pathlib import Path

import numpy as np
import pytest
import torch

import inik_fast
from inik_fast import INIKNet, INIKNetConfig, checkpoint, deblur_file, deblur_image, read_image, write_image
from inik_fast.cli import main
from inik_fast.data import ImageError, SyntheticDefocus

ROOT = Path(__file__).resolve().parents[1]
TINY = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=2, max_kernel_size=5)


@pytest.fixture(scope="module")
def default_model():
    return INIKNet.from_pretrained()


@pytest.fixture(scope="module")
def photo():
    """A 40 x 56 crop of a held-out synthetic image, as an [H, W, 3] float32 array."""
    from inik_fast.data import SyntheticEval

    return SyntheticEval(1, crop=64)[0]["blurry"][:, :40, :56].permute(1, 2, 0).numpy().copy()


def test_from_pretrained_is_the_bundled_checkpoint_and_the_cli(tmp_path, default_model, photo):
    # torch.load(default.pt) is a dict with "model" inside: load_state_dict failed with 131 missing keys
    assert not default_model.training and default_model.config == INIKNetConfig()
    weights = torch.load(checkpoint.DEFAULT_WEIGHTS, weights_only=True)["model"]
    assert all(torch.equal(v, weights[k].float()) for k, v in default_model.state_dict().items())
    write_image(tmp_path / "in.png", photo, 16)
    assert main(["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "cli.png")]) == 0
    ours = deblur_image(read_image(tmp_path / "in.png")[0], default_model)
    cli_out, bits = read_image(tmp_path / "cli.png")
    assert bits == 16 and np.abs(ours - cli_out).max() <= 0.5 / 65535 + 1e-7


def test_from_pretrained_takes_a_release_state_dict(tmp_path):
    torch.manual_seed(0)
    model = INIKNet(TINY, backend="reference")
    torch.save(model.state_dict(), tmp_path / "release.pth")  # as the release saves it
    loaded = INIKNet.from_pretrained(tmp_path / "release.pth", backend="reference")
    assert loaded.config == TINY and not loaded.training
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x)[-1], model.eval()(x)[-1])
    with pytest.raises(checkpoint.CheckpointError, match="no such file"):
        INIKNet.from_pretrained(tmp_path / "missing.pt")

    class Subclass(INIKNet):
        pass

    assert type(Subclass.from_pretrained(tmp_path / "release.pth")) is Subclass


def test_torch_hub_loads_from_a_local_clone(default_model, photo):
    hub = torch.hub.load(str(ROOT), "inik_net", source="local")
    assert isinstance(hub, INIKNet) and not hub.training
    assert np.array_equal(deblur_image(photo, hub), deblur_image(photo, default_model))
    fresh = torch.hub.load(str(ROOT), "inik_net", source="local", pretrained=False)
    assert fresh.training and fresh.config == INIKNetConfig()
    assert not torch.equal(fresh.sum.weight, default_model.sum.weight)


def test_deblur_image_takes_arrays_and_tensors(default_model, photo):
    out = deblur_image(photo, default_model)
    assert out.shape == photo.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    with torch.no_grad():
        raw = default_model(torch.from_numpy(photo).permute(2, 0, 1)[None])[-1][0]
    assert np.array_equal(out, raw.clamp(0, 1).permute(1, 2, 0).numpy())  # the model's output, clamped
    assert np.abs(out - photo).mean() > 1e-3  # it did something
    # 8-bit pixels, and tensors (one image or a batch) give the same result
    pixels = np.round(photo * 255).astype(np.uint8)
    assert np.array_equal(deblur_image(pixels, default_model), deblur_image(pixels / np.float32(255), default_model))
    t = torch.from_numpy(photo).permute(2, 0, 1)
    assert torch.equal(deblur_image(t, default_model), torch.from_numpy(out).permute(2, 0, 1))
    batch = deblur_image(torch.stack([t, t.flip(-1)]), default_model)
    assert batch.shape == (2, 3, 40, 56) and torch.allclose(batch[0], torch.from_numpy(out).permute(2, 0, 1), atol=1e-5)


def test_deblur_image_tiles(default_model, photo):
    # 32-px tiles with a 32-px halo: the context every pixel sees covers this small image, at
    # 4 times the pixels of the untiled run (2 x 2 tiles, each a whole 40 x 56 window)
    with pytest.warns(UserWarning, match="tiles of 32 px with a 32 px halo compute 4.0x the pixels of the 56x40 image"):
        tiled = deblur_image(photo, default_model, tile=32, halo=32)
    assert np.abs(tiled - deblur_image(photo, default_model)).max() < 1e-3


@pytest.mark.parametrize("bad,match", [
    (np.zeros((8, 8)), r"\[H, W, 3\] array, got shape \[8, 8\]"),
    (np.zeros((8, 8, 3), dtype=np.int32), "uint8 / uint16 pixels, got int32"),
    (np.full((8, 8, 3), 255.0), r"finite values in \[0, 1\]"),
    (torch.zeros(1, 4, 8, 8), r"\[3, H, W\] or \[B, 3, H, W\] tensor"),
    ([[0.5]], "numpy array or a torch.Tensor, got list"),
])  # fmt: skip
def test_deblur_image_refuses_bad_images(default_model, bad, match):
    with pytest.raises((ValueError, TypeError), match=match) as e:
        deblur_image(bad, default_model)
    assert str(e.value).startswith("deblur_image: image") and "\n" not in str(e.value)


def test_deblur_file_keeps_the_depth_and_never_overwrites(tmp_path, default_model, photo):
    write_image(tmp_path / "a.tif", photo, 16)
    deblur_file(tmp_path / "a.tif", tmp_path / "out" / "a.png", default_model)
    got, bits = read_image(tmp_path / "out" / "a.png")
    assert bits == 16 and np.abs(got - deblur_image(read_image(tmp_path / "a.tif")[0], default_model)).max() <= 0.5 / 65535 + 1e-7
    with pytest.raises(ImageError, match="is the input"):
        deblur_file(tmp_path / "a.tif", tmp_path / "a.tif", default_model)
    assert read_image(tmp_path / "a.tif")[1] == 16


def test_synthetic_dataset_in_a_data_loader():
    ds = SyntheticDefocus(32, seed=3, length=4)
    assert len(ds) == 4 and isinstance(ds, torch.utils.data.Dataset)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=2))
    assert len(batches) == 2 and all(b.shape == s.shape == (2, 3, 32, 32) for b, s in batches)
    assert torch.equal(batches[1][0][1], ds.sample(3)[0]) and torch.equal(batches[1][1][1], ds[3][1])
    with pytest.raises(IndexError, match="index 4 is outside 0..3"):
        ds[4]


def test_the_public_names():
    assert {"INIKNet", "INIKNetConfig", "deblur_image", "deblur_file", "read_image", "write_image"} <= set(inik_fast.__all__)
