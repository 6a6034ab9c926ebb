"""The tester's typed config and the detectors' model types.

``TesterSettings`` is used through its module: pytest would try to collect a ``Test*`` name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lib.config import ConfigError, load_config
from lib.engine import tester
from lib.models.build import DETECTORS

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = REPO_ROOT / "configs" / "base.yaml"


def test_settings_are_the_tester_section_of_base_yaml():
    settings = tester.TesterSettings.from_config(load_config(BASE))
    assert settings == tester.TesterSettings(
        split="val", checkpoint=None, threshold=0.2, topk=50, score_decimals=6, backprojection="exact"
    )
    cfg = load_config(BASE, ["tester.topk=20", "tester.threshold=0"])
    overridden = tester.TesterSettings.from_config(cfg)
    assert (overridden.topk, overridden.threshold) == (20, 0.0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tester.topk=0", "override 'tester.topk=0': tester.topk must be >= 1, got 0"),
        ("tester.threshold=.nan", "'tester.threshold=.nan': tester.threshold must be in [0, 1], got nan"),
        ("tester.threshold=5", "override 'tester.threshold=5': tester.threshold must be in [0, 1], got 5.0"),
        ("tester.backprojection=approx", "tester.backprojection: 'approx' is not one of exact, reference"),
        ("tester.score_decimals=13", "tester.score_decimals must be in [0, 12], got 13"),
        ("tester.split=''", "tester.split: empty split name"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:  # ranges at load time (lib/config.py RANGES), the rest parsed
        tester.TesterSettings.from_config(load_config(BASE, [override]))
    assert message in str(info.value)


def test_settings_and_section_must_list_the_same_keys():
    section = dict(load_config(BASE).tester) | {"extra": 1}
    with pytest.raises(ValueError, match=r"only in the section: \['extra'\]"):
        tester.TesterSettings.from_config({"tester": section})


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_a_detector_carries_its_model_type(name):
    assert DETECTORS[name].model_type == name  # what the tester passes to decode_detections
