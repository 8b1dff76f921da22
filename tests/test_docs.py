"""The documentation: docs/ops.md's code runs and agrees with the package; the README names only
files that exist."""
import re
from pathlib import Path

import pytest
import torch

from inik_fast import ops
from inik_fast.atoms import coords_and_mask
from op_cases import ATOM_BANK_ARGS, IKCONV_ARGS, atom_bank_case, ikconv_case

ROOT = Path(__file__).resolve().parents[1]
OPS_MD = ROOT / "docs" / "ops.md"


@pytest.fixture(scope="module")
def doc_code():
    """The names defined by docs/ops.md's Python blocks, run in order."""
    blocks = re.findall(r"```python\n(.*?)```", OPS_MD.read_text(), flags=re.S)
    assert len(blocks) == 3
    namespace = {}
    for block in blocks:
        exec(compile(block, str(OPS_MD), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("kind", ["polar", "grid"])
def test_documented_coords_and_mask_are_the_models(doc_code, kind):
    for G in range(1, 10):
        for doc, pkg in zip(doc_code["make_coords_and_mask"](G, kind), coords_and_mask(G, kind)):
            assert torch.equal(doc, pkg), (G, kind)


def test_documented_atom_bank_is_the_op(doc_code):
    case = atom_bank_case(3, 4, 16)
    expected = ops.atom_bank(*[case[k] for k in ATOM_BANK_ARGS], backend="reference")
    got = doc_code["atom_bank_naive"](*[case[k] for k in ATOM_BANK_ARGS])
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("residual,bias", [(True, True), (False, False)])
def test_documented_inverse_kernel_conv_is_the_op(doc_code, residual, bias):
    case = ikconv_case(2, 3, 9, 7, 3, 4, 3 if residual else 2, bias=bias, residual=residual)
    args = [case[k] for k in IKCONV_ARGS]
    expected = ops.inverse_kernel_conv(*args, residual=residual, backend="reference")
    got = doc_code["inverse_kernel_conv_naive"](*args, residual=residual)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def test_readme_names_files_that_exist():
    """Every file path in backticks (with a folder and an extension) is in the repository; the
    README sent readers to shared/design/OPS.md, which is not."""
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"`([\w.-]+(?:/[\w.-]+)+\.\w+)`", text)
    paths = {p for p in found if not p.startswith("../") and not p.split("/")[0].isupper()}  # OUT/, ROOT/: placeholders
    assert "docs/ops.md" in paths
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, missing
