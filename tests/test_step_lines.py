"""tools/dev/step_lines.py on a small hand-written project whose figures are counted by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

MAIN = '''from lib.a import prepare, train


def main():
    """Entry."""
    cfg = prepare()
    if cfg:
        train(cfg)
    else:
        evaluate()


def evaluate():
    return 0
'''
LIB = '''"""Module."""

import torch

SCALE = 2


def prepare():
    return SCALE


class Model:
    """A model."""

    size = 3

    def __init__(self):
        self.w = torch.zeros(1)

    def forward(self, x):
        return helper(x) * self.w

    def unused(self):
        return 1


def helper(x):
    return x


def train(cfg):
    model = Model()
    loss = model(cfg)
    loss.backward()
    after()


def after():
    return 1
'''
OTHER = """from lib.models.build import build_detector


class FooSettings:
    pass


def two():
    return build_detector(1), build_detector(2)
"""
BUILD = "def build_detector(x):\n    return build_detector(x)\n"


def load_tool():
    spec = importlib.util.spec_from_file_location("step_lines", REPO_ROOT / "tools" / "dev" / "step_lines.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool  # its dataclasses look their module up
    spec.loader.exec_module(tool)
    return tool


def test_step_lines_of_a_hand_counted_project(tmp_path: Path) -> None:
    files = {
        "tools/train_val.py": MAIN,
        "tools/other.py": OTHER,
        "lib/__init__.py": "",
        "lib/a.py": LIB,
        "lib/models/build.py": BUILD,
        "configs/base.yaml": "a:\n  b: 1\n  c: [1, 2]\nd: 3\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    tool = load_tool()
    step = tool.step_lines(tmp_path)
    # main 7 (not evaluate: the other branch), prepare 2, SCALE 1, train 5 (not after: past
    # backward), Model 13 lines less its three 2-line methods = 7, __init__ 2, forward 2, helper 2
    # (not unused: never called).
    assert step["files"] == {"tools/train_val.py": 7, "lib/a.py": 21}
    assert (step["lines"], step["docstring_lines"], step["definitions"]) == (28, 2, 8)
    sizes = tool.repository_sizes(tmp_path)
    assert sizes == {
        "lib_lines": 39 + 2,  # lib/a.py, lib/models/build.py
        "base_yaml_keys": 3,
        "settings_classes": 1,
        "build_detector_call_sites": ["tools/other.py:9", "tools/other.py:9"],
    }


def test_step_lines_runs_on_this_repository() -> None:
    step = load_tool().step_lines(REPO_ROOT)
    assert "tools/train_val.py" in step["files"] and "lib/engine/trainer.py" in step["files"]
    assert 0 < step["docstring_lines"] < step["lines"]
