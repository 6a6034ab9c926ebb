"""torchsort is optional: only the Spearman term imports it (lib/losses/distill.py ``require_torchsort``).

A missing torchsort is simulated by ``sys.modules["torchsort"] = None``, which makes
``import torchsort`` raise ImportError as an uninstalled package does.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lib.config import load_config
from lib.distiller import DistillSettings
from lib.errors import UserError
from lib.losses.distill import TORCHSORT_INSTALL, spearman_loss

REPO = Path(__file__).resolve().parents[2]
BASE_DISTILL = DistillSettings.from_config(load_config(REPO / "configs" / "base.yaml"))  # every term off


@pytest.fixture
def no_torchsort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchsort", None)


def _features() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, 4, 5, generator=gen)], [torch.randn(2, 3, 4, 5, generator=gen)]


def test_spearman_without_torchsort_names_the_key_and_the_install(no_torchsort: None) -> None:
    student, teacher = _features()
    with pytest.raises(UserError) as info:
        spearman_loss(student, teacher, strength=1.0, mode="skd")
    message = str(info.value)
    assert "distill.spearman_weight" in message and TORCHSORT_INSTALL in message
    assert TORCHSORT_INSTALL.startswith("pip install") and "torchsort==" in TORCHSORT_INSTALL


def test_settings_refuse_a_spearman_weight_without_torchsort(no_torchsort: None) -> None:
    with pytest.raises(UserError, match=r"distill\.spearman_weight"):
        replace(BASE_DISTILL, spearman_weight=0.5)
    assert replace(
        BASE_DISTILL, spearman_weight=0.0, affinity_weight=1.0
    ).uses_adapters  # off: no torchsort needed


def test_spearman_with_torchsort_is_a_number() -> None:
    pytest.importorskip("torchsort")
    student, teacher = _features()
    loss = spearman_loss(student, teacher, strength=1.0, mode="skd")
    assert loss.shape == () and torch.isfinite(loss) and 0.0 <= float(loss) <= 2.0  # 1 - Pearson
    assert float(spearman_loss(teacher, teacher, strength=1.0, mode="rank_both")) == pytest.approx(
        0.0, abs=1e-5
    )


def test_distillation_imports_without_torchsort() -> None:
    code = (
        "import sys\n"
        "sys.modules['torchsort'] = None\n"
        "import lib.losses.distill, lib.distiller, lib.engine.task\n"
        "from lib.config import load_config\n"
        "from lib.distiller import DistillSettings\n"
        "overrides = ['distill.feature_weight=1', 'distill.affinity_weight=1', 'distill.response_weight=1']\n"
        "DistillSettings.from_config(load_config('configs/base.yaml', overrides))\n"
    )
    cmd = [sys.executable, "-c", code]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
