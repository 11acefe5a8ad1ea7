"""Chapter 3's PyTorch recipes, run exactly as the page shows them (torch 2.13 CPU).

Every ```python block inside a ``{tab-item} PyTorch`` of chapters/03_test_time.ipynb is
executed on its own; its asserts are the claims the page makes. Further tests check
statements the chapter makes about PyTorch in its prose (NaN at evaluation, float16).

Skipped where torch is not installed, except under CI=true, where a missing torch
fails the run (requirements-dev.txt pins it), as in tests/test_torch_parity.py.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
NOTEBOOK = Path(__file__).resolve().parents[2] / "chapters" / "03_test_time.ipynb"
SNIPPET = re.compile(r":::\{tab-item\} PyTorch\n```python\n(.*?)\n```", re.S)


def _import_torch():
    """torch; where it is missing, skip this module, or fail it under CI=true."""
    try:
        import torch
    except ImportError:
        if IN_CI:
            pytest.fail(
                "CI=true but torch is not installed: chapter 3's PyTorch recipes must "
                "run in CI (.venv/bin/pip install -r requirements-dev.txt)",
                pytrace=False,
            )
        pytest.skip(
            "torch is not installed (pip install -r requirements-dev.txt)",
            allow_module_level=True,
        )
    return torch


def _snippets():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    return SNIPPET.findall("\n".join(markdown))


SNIPPETS = _snippets()
torch = _import_torch()
torch.set_num_threads(1)


def test_the_page_shows_pytorch_recipes():
    assert len(SNIPPETS) >= 8


@pytest.mark.parametrize("code", SNIPPETS, ids=lambda s: s.splitlines()[-1][:40])
def test_pytorch_recipe_runs_as_shown(code, capsys):
    exec(compile(code, "<chapter 3 snippet>", "exec"), {"__name__": "snippet"})


def test_eval_with_zero_variance_and_zero_eps_is_nan_for_every_input():
    """PyTorch folds the statistics into scale and shift: 0 * inf = NaN in the shift."""
    bn = torch.nn.BatchNorm1d(3, eps=0.0, dtype=torch.float64).eval()
    bn.running_mean = torch.tensor([0.1, 0.0, -2.0], dtype=torch.float64)
    bn.running_var = torch.tensor([1.3, 0.0, 0.7], dtype=torch.float64)
    x = torch.tensor([[0.4, 0.0, -1.0], [0.4, 0.2, -1.0]], dtype=torch.float64)
    with torch.no_grad():
        out = bn(x)
    assert torch.isnan(out[:, 1]).all()  # NaN for x = 0 and for x = 0.2 alike
    assert torch.isfinite(out[:, [0, 2]]).all()


def test_half_precision_batchnorm_keeps_finite_statistics():
    """The batch that overflows bnlib's float16 variance (chapter 3, section 7.1)."""
    raw = np.random.default_rng(0).normal(0.0, 400.0, (8, 2))
    bn = torch.nn.BatchNorm1d(2).half()
    with torch.no_grad():
        out = bn(torch.tensor(raw, dtype=torch.float16))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.isfinite(bn.running_var).all() and (bn.running_var > 1000).all()


def test_running_mean_stays_nan_after_clean_batches():
    bn = torch.nn.BatchNorm1d(3)
    bad = torch.randn(16, 3)
    bad[0, 0] = float("inf")
    bn(bad)
    for _ in range(100):
        bn(torch.randn(16, 3))
    assert not torch.isfinite(bn.running_mean[0])
    assert torch.isfinite(bn.running_mean[1:]).all()
