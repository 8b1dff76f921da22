"""inik_fast.data: image I/O, augmentation, dataset layouts (tiny fake trees), synthetic defocus."""
import dataclasses
import struct
import zlib

import numpy as np
import pytest
import torch

from inik_fast.data import FOLDER_DATASETS, ImageError, PairCrops, SyntheticDefocus, SyntheticEval, read_image, write_image, write_pairs
from inik_fast.data.augment import apply_dihedral, augment_pair
from inik_fast.data.image_io import probe_image
from inik_fast.data.depth import LAYOUTS, coc_radius, depth_map
from inik_fast.data.formation import EDGES, SPACES, Formation, draw_formation, render
from inik_fast.data.psf import PSF_FAMILIES, SUPPORT, channel_radii, draw_shape, psf_kernel
from inik_fast.data.synthetic import EVAL_FAMILIES, EVAL_PHOTOS, FAMILIES, HELD_OUT, TRAIN_PHOTOS


def rand_img(h=20, w=30, seed=0):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# image I/O
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext,bits,tol", [(".png", 8, 0.5 / 255), (".png", 16, 0.5 / 65535), (".tif", 8, 0.5 / 255), (".tiff", 16, 0.5 / 65535), (".jpg", 8, 0.15)])
def test_write_read_roundtrip(tmp_path, ext, bits, tol):
    img = rand_img()
    if ext == ".jpg":  # JPEG is lossy: a smooth image keeps its values closely
        img = np.broadcast_to(np.linspace(0, 1, 30, dtype=np.float32)[None, :, None], (20, 30, 3)).copy()
    path = tmp_path / f"x{ext}"
    write_image(path, img, bits)
    back, got_bits = read_image(path)
    assert got_bits == (8 if ext == ".jpg" else bits)
    assert back.dtype == np.float32 and back.shape == (20, 30, 3)
    assert np.abs(back - img).max() <= tol + 1e-7


def test_read_grey_palette_and_alpha(tmp_path):
    from PIL import Image

    grey = (np.arange(600).reshape(20, 30) % 256).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    img, bits = read_image(tmp_path / "g.png")
    assert bits == 8 and img.shape == (20, 30, 3) and np.allclose(img[..., 0], grey / 255) and np.array_equal(img[..., 0], img[..., 2])
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png")
    Image.fromarray(np.dstack([grey] * 4)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "p.png")[0].shape == (20, 30, 3)
    assert np.allclose(read_image(tmp_path / "a.png")[0][..., 0], grey / 255)


def test_read_16bit_grey_png(tmp_path):
    import imagecodecs

    g = (np.arange(600).reshape(20, 30) * 100).astype(np.uint16)
    (tmp_path / "g16.png").write_bytes(imagecodecs.png_encode(g))
    img, bits = read_image(tmp_path / "g16.png")
    assert bits == 16 and np.allclose(img[..., 1], g / 65535, atol=1e-7)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_at_8_and_16_bits(tmp_path, orientation):
    from PIL import Image

    g = (np.arange(600).reshape(20, 30) * 100).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(g).save(tmp_path / "g16.png", exif=exif.tobytes())
    Image.fromarray((g >> 8).astype(np.uint8)).save(tmp_path / "g8.png", exif=exif.tobytes())
    img16, bits16 = read_image(tmp_path / "g16.png")
    img8, bits8 = read_image(tmp_path / "g8.png")  # Pillow's own exif_transpose
    assert (bits16, bits8) == (16, 8) and img16.shape == img8.shape == ((20, 30) if orientation < 5 else (30, 20)) + (3,)
    assert np.allclose(img16, img8, atol=1 / 255)


def png_header_only(w, h):
    """A PNG that claims w x h pixels but holds one tiny compressed row: a decompression bomb's header."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_bad_images_raise_one_line_errors(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    write_image(tmp_path / "ok.png", rand_img(64, 64))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    cases = {"text.png": "not an image", "cut.png": "cannot decode", "bomb.png": "decompression bomb", "missing.png": "no such file"}
    for name, what in cases.items():
        with pytest.raises(ImageError, match=what) as e:
            read_image(tmp_path / name)
        assert "\n" not in str(e.value)
    with pytest.raises(ImageError, match="decompression bomb"):
        probe_image(tmp_path / "bomb.png")
    assert probe_image(tmp_path / "ok.png") == (64, 64)
    with pytest.raises(ImageError, match="exceeds max_pixels=100"):
        read_image(tmp_path / "ok.png", max_pixels=100)


def test_write_is_atomic(tmp_path):
    with pytest.raises(ImageError, match="output format"):
        write_image(tmp_path / "x.gif", rand_img())
    write_image(tmp_path / "x.png", rand_img())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # no temporary file left


@pytest.mark.parametrize("ext,bits", [(".png", 8), (".png", 16), (".tif", 16)])
def test_write_takes_any_memory_layout(tmp_path, ext, bits):
    # a transposed [3, H, W] tensor (as deblur writes it) made the 16-bit PNG encoder fail
    img = np.ascontiguousarray(rand_img().transpose(2, 0, 1)).transpose(1, 2, 0)
    assert not img.flags.c_contiguous
    write_image(tmp_path / f"x{ext}", img, bits)
    assert np.abs(read_image(tmp_path / f"x{ext}")[0] - img).max() <= 0.5 / (2**bits - 1) + 1e-7


def test_write_errors_name_the_file_and_create_nothing(tmp_path):
    for bad, what in ((np.zeros((4, 4)), r"\[H, W, 3\]"), (np.full((4, 4, 3), np.nan), "finite")):
        target = tmp_path / "new" / "x.png"
        with pytest.raises(ImageError, match=what) as e:
            write_image(target, bad, 16)
        assert str(target) in str(e.value) and "\n" not in str(e.value)
        assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------------------------
# augmentation
# ----------------------------------------------------------------------------------------------
def test_augment_pair_applies_one_transform_to_both():
    a = torch.arange(3 * 12 * 10, dtype=torch.float32).view(3, 12, 10)
    seen = set()
    for seed in range(40):
        x, y = augment_pair([a, a * 2], 6, np.random.default_rng(seed))
        assert x.shape == (3, 6, 6) and torch.equal(y, x * 2)
        # the result is one of the 8 flips/rotations of some 6x6 crop of a
        found = [
            (hf, vf, r)
            for t in range(7)
            for left in range(5)
            for hf in (False, True)
            for vf in (False, True)
            for r in range(4)
            if torch.equal(apply_dihedral(a[:, t : t + 6, left : left + 6], hf, vf, r), x)
        ]
        assert found
        seen.add(found[0])
    assert len({(hf ^ vf, r % 2) for hf, vf, r in seen}) >= 3  # several distinct orientations occur
    x1 = augment_pair([a], 6, np.random.default_rng(5))[0]
    assert torch.equal(x1, augment_pair([a], 6, np.random.default_rng(5))[0])
    with pytest.raises(ValueError, match="crop=20"):
        augment_pair([a], 20, np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------
# dataset layouts
# ----------------------------------------------------------------------------------------------
def put(path, seed=0, bits=8, size=(24, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, rand_img(*size, seed=seed), bits)


def test_dpdd_layout_16bit(tmp_path):
    for split in ("train", "test"):
        for i in range(2):
            put(tmp_path / f"{split}_c" / "source" / f"{i}.png", seed=i, bits=16)
            put(tmp_path / f"{split}_c" / "target" / f"{i}.png", seed=10 + i, bits=16)
    ds = FOLDER_DATASETS["dpdd"](tmp_path, "test")
    assert len(ds) == 2
    item = ds[1]
    assert item["name"] == "test_c/source/1.png" and item["blurry"].shape == (3, 24, 32)
    assert torch.allclose(item["sharp"], torch.from_numpy(rand_img(24, 32, seed=11).transpose(2, 0, 1)), atol=1e-4)
    with pytest.raises(ValueError, match="val_c"):
        FOLDER_DATASETS["dpdd"](tmp_path, "val")
    with pytest.raises(ValueError, match="split='dev'"):
        FOLDER_DATASETS["dpdd"](tmp_path, "dev")


def test_lfdof_layouts(tmp_path):
    for scene in ("a", "b"):  # training layout: input/SCENE/*.png share ground_truth/SCENE.png
        put(tmp_path / "train_data" / "ground_truth" / f"{scene}.png")
        for k in range(3):
            put(tmp_path / "train_data" / "input" / scene / f"{k}.png", seed=k)
    put(tmp_path / "test_data" / "input" / "IMG_1.png")  # flat test layout
    put(tmp_path / "test_data" / "ground_truth" / "IMG_1.png")
    train = FOLDER_DATASETS["lfdof"](tmp_path, "train")
    assert len(train) == 6
    assert [(b.parent.name, s.name) for b, s in train.pairs[:3]] == [("a", "a.png")] * 3
    assert len(FOLDER_DATASETS["lfdof"](tmp_path, "test")) == 1


def test_realdof_rtf_cuhk_pairs_layouts(tmp_path):
    for i in range(2):
        put(tmp_path / "realdof" / "source" / f"{i}.png")
        put(tmp_path / "realdof" / "target" / f"{i}.png")
        put(tmp_path / "rtf" / "image" / "0" / f"image_0{i}.png")
        put(tmp_path / "rtf" / "GT" / f"sharp_0{i}.png")
        put(tmp_path / "pairs" / "blurry" / f"{i}.png")
        put(tmp_path / "pairs" / "sharp" / f"{i}.png")
    put(tmp_path / "cuhk" / "image" / "out_of_focus0001.jpg")
    put(tmp_path / "cuhk" / "image" / "motion0001.jpg")
    assert len(FOLDER_DATASETS["realdof"](tmp_path / "realdof")) == 2
    rtf = FOLDER_DATASETS["rtf"](tmp_path / "rtf")
    assert [(b.name, s.name) for b, s in rtf.pairs] == [("image_00.png", "sharp_00.png"), ("image_01.png", "sharp_01.png")]
    cuhk = FOLDER_DATASETS["cuhk"](tmp_path / "cuhk")
    assert [b.name for b, _ in cuhk.pairs] == ["out_of_focus0001.jpg"] and cuhk[0]["sharp"] is None
    assert len(FOLDER_DATASETS["pairs"](tmp_path / "pairs")) == 2
    (tmp_path / "pairs" / "sharp" / "1.png").unlink()
    with pytest.raises(ValueError, match="no sharp image for .*1.png"):
        FOLDER_DATASETS["pairs"](tmp_path / "pairs")
    with pytest.raises(ValueError, match="needs a blurry folder"):
        FOLDER_DATASETS["pairs"](tmp_path / "realdof" / "source")


def test_pair_crops_are_deterministic(tmp_path):
    for i in range(3):
        put(tmp_path / "blurry" / f"{i}.png", seed=i)
        put(tmp_path / "sharp" / f"{i}.png", seed=i)
    stream = PairCrops(FOLDER_DATASETS["pairs"](tmp_path), 16, seed=3)
    b, s = stream.sample(7)
    assert b.shape == s.shape == (3, 16, 16) and torch.equal(b, s)  # same files: same crop and flips
    assert torch.equal(stream.sample(7)[0], b)
    assert not torch.equal(PairCrops(stream.dataset, 16, seed=4).sample(7)[0], b)


# ----------------------------------------------------------------------------------------------
# synthetic defocus
# ----------------------------------------------------------------------------------------------
def test_motorcycle_and_eval_photos_are_held_out():
    assert not set(EVAL_PHOTOS) & set(TRAIN_PHOTOS)
    assert {"motorcycle_left", "motorcycle_right"} <= set(EVAL_PHOTOS)
    assert not any("motorcycle" in p or "stereo" in p for p in TRAIN_PHOTOS)


def test_synthetic_stream_is_deterministic_per_seed():
    s = SyntheticDefocus(32, seed=1)
    b, sh = s.sample(5)
    assert b.shape == sh.shape == (3, 32, 32) and b.dtype == torch.float32
    assert 0 <= b.min() and b.max() <= 1 and torch.equal(torch.round(b * 255), b * 255)  # 8-bit values
    assert torch.equal(SyntheticDefocus(32, seed=1).sample(5)[0], b)
    assert not torch.equal(SyntheticDefocus(32, seed=2).sample(5)[0], b)
    assert not torch.equal(s.sample(6)[1], sh)


def _blur(sharp, radius_map, psf="disk", space="linear", edges="pixel", shape=None):
    """render() of `sharp` with a nearness map whose blur radius is `radius_map` (focus at 0)."""
    r_max = float(radius_map.max())
    f = Formation(psf, shape or {}, space, edges, 0.0, r_max, 0.0, 0.0, 0)
    nearness = radius_map / r_max if r_max > 0 else radius_map
    return render(sharp, nearness, f, np.random.default_rng(0))


@pytest.mark.parametrize("family", PSF_FAMILIES)
def test_psf_families_are_normalised_centred_and_grow(family):
    shape = draw_shape(family, np.random.default_rng(3))
    yy, xx = torch.meshgrid(torch.arange(31.0) - 15, torch.arange(31.0) - 15, indexing="ij")
    spreads = []
    for r in (0.0, 1.0, 3.0, 6.0):
        k = psf_kernel(family, shape, r, 31)
        assert abs(float(k.sum()) - 1) < 1e-12 and float(k.min()) >= 0
        assert abs(float((k * xx).sum())) < 0.05 and abs(float((k * yy).sum())) < 0.05  # no image shift
        assert float(k[(yy**2 + xx**2) > (SUPPORT * r + 1) ** 2].sum()) < 1e-9  # inside the support
        spreads.append(float((k * (yy**2 + xx**2)).sum()))
    assert spreads[0] == 0 and spreads[1] < spreads[2] < spreads[3]


def test_psf_shapes_differ_and_chromatic_radii():
    rng = np.random.default_rng(0)
    kernels = {f: psf_kernel(f, draw_shape(f, rng), 5.0, 21) for f in PSF_FAMILIES if f != "chromatic"}
    names = list(kernels)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (kernels[a] - kernels[b]).abs().max() > 1e-3, (a, b)
    r, g, b = channel_radii("chromatic", {"chroma": 0.1}, 5.0)
    assert r == pytest.approx(5.5) and g == 5.0 and b == pytest.approx(4.5)
    assert channel_radii("disk", {}, 5.0) == (5.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="psf 'star'"):
        draw_shape("star", rng)


@pytest.mark.parametrize("edges", EDGES)
@pytest.mark.parametrize("space", SPACES)
def test_spatially_varying_blur(edges, space):
    sharp = torch.from_numpy(rand_img(40, 40).transpose(2, 0, 1).copy())
    q = lambda t: torch.round(t.double() * 255) / 255  # noqa: E731  render() quantises to 8 bits
    radius = np.zeros((40, 40))
    assert torch.allclose(_blur(sharp, radius, space=space, edges=edges).double(), q(sharp), atol=1e-6)  # in focus
    radius[:, 25:] = 4.0  # blur only where the radius is non-zero
    out = _blur(sharp, radius, space=space, edges=edges)
    assert torch.allclose(out[:, :, :15].double(), q(sharp[:, :, :15]), atol=1e-6)
    assert (out[:, :, 30:] - sharp[:, :, 30:]).abs().mean() > 0.1
    # a flat grey image stays flat under any PSF and either edge model (no dark fringes)
    grey = torch.full((3, 40, 40), 0.5)
    assert (_blur(grey, radius, "polygon", space, edges, {"blades": 6, "rotation": 0.3}) - q(grey)).abs().max() < 2 / 255


def test_blur_space_matters():
    """Blurring the gamma-encoded image darkens a bright edge less than blurring light does."""
    sharp = torch.zeros(3, 32, 32)
    sharp[:, :, 16:] = 1.0
    radius = np.full((32, 32), 3.0)
    lin, enc = _blur(sharp, radius, space="linear"), _blur(sharp, radius, space="srgb")
    assert float(lin[:, :, 14].mean()) > float(enc[:, :, 14].mean()) + 0.05


def test_depth_layouts_and_coc():
    rng = np.random.default_rng(0)
    for layout in LAYOUTS:
        d = depth_map(30, 40, layout, rng)
        assert d.shape == (30, 40) and d.min() >= 0 and d.max() <= 1
        r = coc_radius(d, 0.3, 8.0)
        assert abs(r.max() - 8.0) < 1e-9 and r.min() >= 0
    with pytest.raises(ValueError, match="layout"):
        depth_map(4, 4, "spiral", rng)


def test_formations_hold_out_a_psf_family_and_a_blur_space():
    assert HELD_OUT["psf"] and HELD_OUT["space"]
    rng = np.random.default_rng(0)
    draws = [draw_formation(rng, *FAMILIES["train"], 12.0, 0.02, 0.5) for _ in range(300)]
    assert {f.psf for f in draws} == set(PSF_FAMILIES) - set(HELD_OUT["psf"])
    assert {f.space for f in draws} == set(SPACES) - set(HELD_OUT["space"])
    assert {f.edges for f in draws} == set(EDGES)
    assert all(1.0 <= f.r_max <= 12.0 and 0 <= f.focus <= 1 for f in draws)
    assert 0.3 < np.mean([f.jpeg > 0 for f in draws]) < 0.7 and all(f.jpeg == 0 or 60 <= f.jpeg <= 95 for f in draws)
    for name in set(EVAL_FAMILIES) - {"srgb"}:
        assert FAMILIES[name] == ((name,), ("linear",))
    assert FAMILIES["srgb"][1] == ("srgb",) and set(HELD_OUT["psf"]) <= set(EVAL_FAMILIES)


def test_noise_and_jpeg_change_the_photo():
    sharp = torch.from_numpy(rand_img(32, 32).transpose(2, 0, 1).copy())
    nearness = np.zeros((32, 32))
    clean = Formation("disk", {}, "linear", "pixel", 0.0, 2.0, 0.0, 0.0, 0)
    base = render(sharp, nearness, clean, np.random.default_rng(0))
    noisy = render(sharp, nearness, dataclasses.replace(clean, shot=1e-3, read=0.01), np.random.default_rng(0))
    jpeg = render(sharp, nearness, dataclasses.replace(clean, jpeg=60), np.random.default_rng(0))
    assert 0.005 < float((noisy - base).std()) < 0.1
    assert float((jpeg - base).abs().mean()) > 0.01


def test_blur_settings_are_checked_and_kept():
    rng = np.random.default_rng(0)
    assert all(draw_formation(rng, ("disk",), ("linear",), 0.5, 0, 0).r_max <= 0.5 for _ in range(20))  # r_max from [0.5, 1]
    assert all(1.0 <= draw_formation(rng, ("disk",), ("linear",), 4.0, 0, 0).r_max <= 4.0 for _ in range(20))
    for cls in (SyntheticEval, lambda **kw: SyntheticDefocus(32, **kw)):  # the eval set took any radius and noise
        with pytest.raises(ValueError, match="max_radius=-3"):
            cls(max_radius=-3)
        with pytest.raises(ValueError, match="noise=-1"):
            cls(noise=-1)
        with pytest.raises(ValueError, match="jpeg=2"):
            cls(jpeg=2)
    with pytest.raises(ValueError, match="families=\\['bokeh'\\]"):
        SyntheticEval(families=("bokeh",))


def test_eval_set_and_write_pairs(tmp_path):
    ev = SyntheticEval(2, crop=48)
    assert len(ev) == 2 * len(EVAL_FAMILIES)
    items = [ev[i] for i in range(len(ev))]
    assert [it["family"] for it in items] == [f for f in EVAL_FAMILIES for _ in range(2)]
    assert [it["name"].split("_")[1] for it in items[:2]] == ["motorcycle", "motorcycle"]
    for it in items:  # each family's formation is its own: the PSF and blur space in the name
        psfs, spaces = FAMILIES[it["family"]]
        assert any(f"_{p}_" in it["name"] for p in psfs) and it["name"].split("_")[-2] in spaces
    assert items[0]["blurry"].shape == (3, 48, 48)
    assert torch.equal(SyntheticEval(2, crop=48)[1]["blurry"], items[1]["blurry"])
    assert not torch.equal(items[0]["blurry"], items[2]["blurry"])  # families draw differently
    write_pairs(tmp_path / "train", 3, crop=32, seed=0)
    ds = FOLDER_DATASETS["pairs"](tmp_path / "train")
    assert len(ds) == 3
    b, s = SyntheticDefocus(32, seed=0).sample(2)
    assert torch.allclose(ds[2]["blurry"], b, atol=1e-6) and torch.allclose(ds[2]["sharp"], s, atol=0.51 / 255)


def test_write_eval_pairs_one_folder_per_family(tmp_path, monkeypatch):
    import inik_fast.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "load_photo", lambda name: torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(len(name))))
    monkeypatch.setattr(synthetic, "motorcycle_nearness", lambda: np.zeros((40, 56)))
    written = write_pairs(tmp_path, 1, split="eval")
    assert len(written) == len(EVAL_FAMILIES)
    for family in EVAL_FAMILIES:
        assert len(FOLDER_DATASETS["pairs"](tmp_path / family)) == 1
