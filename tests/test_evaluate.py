"""`inik-fast eval` on the synthetic held-out set: one table row per family, held-out families marked."""
import numpy as np
import pytest
import torch

import inik_fast.data.synthetic as synthetic
from inik_fast import INIKNet, INIKNetConfig, checkpoint
from inik_fast.evaluate import evaluate, format_table

TINY = INIKNetConfig(base_ch=8, num_res_unet=1, num_res_lstm=1, basis_num=2, max_kernel_size=5)


@pytest.fixture
def small_photos(monkeypatch):
    monkeypatch.setattr(synthetic, "load_photo", lambda name: torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(len(name))))
    monkeypatch.setattr(synthetic, "motorcycle_nearness", lambda: np.linspace(0, 1, 40 * 56).reshape(40, 56))


def test_eval_reports_every_family(small_photos):
    torch.manual_seed(0)
    report = evaluate(INIKNet(TINY, backend="reference").eval(), count=2)
    fams = report["families"]
    assert list(fams) == list(synthetic.EVAL_FAMILIES) and len(report["images"]) == 2 * len(fams)
    for name, m in fams.items():
        rows = [r for r in report["images"] if r["family"] == name]
        assert m["images"] == len(rows) == 2
        assert m["output"]["psnr"] == pytest.approx(np.mean([r["output"]["psnr"] for r in rows]))
        assert m["psnr_gain"] == pytest.approx(m["output"]["psnr"] - m["input"]["psnr"])
        assert m["ssim_lower"] == sum(r["output"]["ssim"] < r["input"]["ssim"] for r in rows)
    assert report["mean"]["output"]["psnr"] == pytest.approx(np.mean([r["output"]["psnr"] for r in report["images"]]))

    table = format_table(report)
    assert "| cateye (held out)" in table and "| srgb (held out)" in table and "| disk " in table and "| all " in table
    summary = checkpoint.eval_summary(report)
    assert summary["family_gains"] == {f: m["psnr_gain"] for f, m in fams.items()}


def test_eval_on_the_training_photos(small_photos):
    """split="train": the same families on the training photos (to tell fitting from
    generalising); any other split of the synthetic set is refused by name."""
    torch.manual_seed(0)
    model = INIKNet(TINY, backend="reference").eval()
    report = evaluate(model, split="train", count=2, limit=4)
    names = [r["name"] for r in report["images"]]  # 2 per family: the first two training photos
    expected = [synthetic.TRAIN_PHOTOS[j] for j in (0, 1, 0, 1)]
    assert all(n.split("_", 1)[1].startswith(f"{p}_") for n, p in zip(names, expected)), names
    held_out = evaluate(model, split="test", count=2, limit=1)["images"][0]["name"]
    assert "motorcycle_left_disparity" in held_out
    with pytest.raises(Exception, match="--split val: the synthetic set has 'test'"):
        evaluate(model, split="val", count=1)
