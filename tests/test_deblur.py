"""Inference: any image size, tiled = untiled, input and output path handling."""
import copy

import pytest
import torch

from inik_fast import INIKNet, INIKNetConfig, memory
from inik_fast.data import ImageError, SyntheticEval, write_image
from inik_fast.data.image_io import READ_EXTS
from inik_fast.deblur import choose_tile, deblur, expand_inputs, output_paths, tiled_forward
from inik_fast.errors import UserError

TINY = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=2, max_kernel_size=5)
# Small tiles on small images, on purpose: the costly-tiling warning is tested in test_python_api.py.
pytestmark = pytest.mark.filterwarnings("ignore:tiles of .* compute")


@pytest.fixture(scope="module")
def sensitive_model():
    """A tiny model whose output depends strongly on far context: convolutions scaled up 1.3x
    and the inverse-kernel mixing 30x. Measured on the photo below: its output differs from its
    input by 0.27 on average, and tiles without a halo are off by 0.66 at the seams (a freshly
    initialised model: 0.09 and 0.015, too little for the seam tests to tell context from none)."""
    torch.manual_seed(0)
    m = INIKNet(TINY, backend="reference").eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 4 and not name.startswith("sum"):
                p.mul_(1.3)
        m.sum.weight.mul_(30)
    return m


@pytest.fixture(scope="module")
def photo():
    return SyntheticEval(1, crop=192)[0]["blurry"][None]  # the motorcycle, 192 x 192


def test_tiled_equals_untiled(sensitive_model, photo):
    with torch.no_grad():
        full = sensitive_model(photo)[-1]
    assert (full - photo).abs().mean() > 0.1  # the model is far from the identity
    # tiles of 48 px with a 48 px halo (every pixel sees >= 32 px of context): within 1e-3
    tiled = tiled_forward(sensitive_model, photo, tile=48, halo=48, blend=16)
    assert (tiled - full).abs().max() < 1e-3
    # without a halo the seams are visible: the test is sensitive to the context
    assert (tiled_forward(sensitive_model, photo, tile=48, halo=0, blend=0) - full).abs().max() > 1e-2


def test_tiles_of_any_size_and_odd_images(sensitive_model, photo):
    x = photo[:, :, :150, :170]  # not multiples of 16; the tile size is rounded up to 48
    with torch.no_grad():
        full = sensitive_model(x)[-1]
    assert (tiled_forward(sensitive_model, x, tile=40, halo=48, blend=16) - full).abs().max() < 1e-3
    with pytest.raises(ValueError, match="tiling"):
        tiled_forward(sensitive_model, x, tile=32, halo=16, blend=32)


def test_deblur_takes_any_halo(sensitive_model, photo):
    # a halo below the default 16 px blend band was refused with an error about `blend`
    def alone(h, w):  # the model's output on the top-left h x w window alone
        with torch.no_grad():
            return sensitive_model(photo[:, :, :h, :w])[-1][0].clamp(0, 1)

    # halo 0: each 48 px tile is the model's output on that tile, nothing else
    tiled = deblur(sensitive_model, photo[0], tile=48, halo=0)
    assert (tiled[:, :48, :48] - alone(48, 48)).abs().max() < 1e-6
    # halo 8, rounded up to 16 px of context (the 1/4-scale grid), fading over 8 px: the top-left
    # tile's window is 64 px wide, and no other tile reaches its first 40 px
    tiled = deblur(sensitive_model, photo[0], tile=48, halo=8)
    assert (tiled[:, :40, :40] - alone(64, 64)[:, :40, :40]).abs().max() < 1e-6
    assert (deblur(sensitive_model, photo[0], tile=48, halo=48) - deblur(sensitive_model, photo[0])).abs().max() < 1e-3


@pytest.mark.parametrize("h,w", [(1, 1), (17, 33), (37, 53)])
def test_deblur_keeps_any_size(h, w):
    torch.manual_seed(0)
    y = deblur(INIKNet(TINY, backend="reference").eval(), torch.rand(3, h, w))
    assert y.shape == (3, h, w) and 0 <= y.min() and y.max() <= 1


def test_expand_inputs_and_output_paths(tmp_path):
    img = torch.rand(16, 16, 3).numpy()
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.jpg", "c.tif"):
        write_image(tmp_path / "in" / name, img)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    files = expand_inputs([str(tmp_path / "in"), str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "*.jpg")])
    assert [p.name for p in files] == ["a.png", "b.jpg", "c.tif"]  # folder order, no duplicates, no text file
    outs = output_paths(files, tmp_path / "out", None)
    assert [p.name for p in outs] == ["a.png", "b.jpg", "c.tif"]
    assert [p.name for p in output_paths(files, tmp_path / "out", "tiff")] == ["a.tiff", "b.tiff", "c.tiff"]
    assert output_paths(files[:1], tmp_path / "one.jpg", None) == [tmp_path / "one.jpg"]
    with pytest.raises(ImageError, match="need an output folder"):
        output_paths(files, tmp_path / "one.jpg", None)
    with pytest.raises(ImageError, match="no such file, folder or matching glob"):
        expand_inputs([str(tmp_path / "nothing*.png")])
    with pytest.raises(ImageError, match="--format gif"):
        output_paths(files, tmp_path / "out", "gif")
    # never over an input: the folder itself, or the one input named as the output
    with pytest.raises(ImageError, match=r"a\.png is one of the inputs; write the results elsewhere"):
        output_paths(files, tmp_path / "in", None)
    with pytest.raises(ImageError, match="is one of the inputs"):
        output_paths(files[:1], files[0], None)
    assert [p.name for p in output_paths(files, tmp_path / "in", "tiff")] == ["a.tiff", "b.tiff", "c.tiff"]


def test_output_file_of_every_readable_format_or_a_refusal(tmp_path):
    # -o x.webp created a folder named x.webp
    write_image(tmp_path / "a.png", torch.rand(16, 16, 3).numpy())
    files = [tmp_path / "a.png"]
    for ext in READ_EXTS:
        assert output_paths(files, tmp_path / f"o{ext}", None) == [tmp_path / f"o{ext}"], ext
    with pytest.raises(ImageError, match=r"x\.gif: cannot write \.gif images; expected a folder or a file ending in \.png"):
        output_paths(files, tmp_path / "x.gif", None)
    assert output_paths(files, tmp_path / "run.v2", None) == [tmp_path / "run.v2" / "a.png"]  # a folder name with a dot


# ----------------------------------------------------------------------------------------------
# tiles from a memory budget
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def no_held_memory(monkeypatch):
    """Budgets of the forward alone: the process's RSS moves between calls, the tile must not."""
    monkeypatch.setattr(memory, "held_bytes", lambda device: 0)


def test_budget_picks_smaller_tiles_and_equals_untiled(sensitive_model, photo, no_held_memory):
    with torch.no_grad():
        full = sensitive_model(photo)[-1].clamp(0, 1)
    whole = memory.forward_bytes(TINY, 192, 192, backend="reference")
    assert choose_tile(sensitive_model, photo, whole) is None  # fits: untiled
    assert torch.equal(deblur(sensitive_model, photo, halo=48, max_memory=whole), full)
    tiles = []
    for side in (176, 144):  # budgets of one window of that side
        budget = memory.forward_bytes(TINY, side, side, backend="reference") + memory.TILING_BYTES_PER_PIXEL * 192 * 192
        tiles.append(choose_tile(sensitive_model, photo, budget, halo=48))
        tiled = deblur(sensitive_model, photo, halo=48, max_memory=budget)
        assert torch.equal(tiled, tiled_forward(sensitive_model, photo, tiles[-1], 48).clamp(0, 1))
        assert (tiled - full).abs().max() < 1e-3
    assert tiles == [64, 48], tiles  # 176 - 2 x 48 = 80, as 3 equal tiles of 64; 144 - 96 = 48


def test_auto_budget_tiles_what_does_not_fit(sensitive_model, photo, no_held_memory, monkeypatch):
    with torch.no_grad():
        full = sensitive_model(photo)[-1].clamp(0, 1)
    assert torch.equal(deblur(sensitive_model, photo, halo=48, max_memory="auto"), full)  # fits in RAM
    small = memory.forward_bytes(TINY, 144, 144, backend="reference") + memory.TILING_BYTES_PER_PIXEL * 192 * 192
    monkeypatch.setattr(memory, "default_budget", lambda device: small)
    assert choose_tile(sensitive_model, photo, "auto", halo=48) == 48
    assert (deblur(sensitive_model, photo, halo=48, max_memory="auto") - full).abs().max() < 1e-3
    with pytest.raises(UserError, match="--max-memory 4MiB of RAM: expected a size"):
        deblur(sensitive_model, photo, max_memory="4MiB of RAM")


def test_progress_bar_of_the_tiles(sensitive_model, photo, capsys):
    tiled_forward(sensitive_model, photo, tile=96, halo=16, progress=True)
    assert "4/4" in capsys.readouterr().err
    tiled_forward(sensitive_model, photo, tile=96, halo=16)
    assert capsys.readouterr().err == ""


def test_bf16_model_takes_bf16_input_and_stays_close(photo):
    """A bfloat16 model runs on bfloat16 input; its output is as close to float32 as the
    reference backend in bfloat16 gets (the bound for any backend)."""
    torch.manual_seed(0)
    fp32 = INIKNet(TINY).eval()
    full = deblur(fp32, photo)
    ref = copy.deepcopy(fp32)
    ref.backend = "reference"
    bound = (deblur(ref.to(torch.bfloat16), photo) - full).abs().max()
    out = deblur(copy.deepcopy(fp32).to(torch.bfloat16), photo)
    assert out.dtype == torch.float32 and out.shape == photo.shape
    assert 0 < (out - full).abs().max() <= 1.5 * bound and bound < 0.05, bound
    tiled = deblur(copy.deepcopy(fp32).to(torch.bfloat16), photo, tile=96, halo=48)
    assert (tiled - full).abs().max() <= 1.5 * bound + 1e-3
