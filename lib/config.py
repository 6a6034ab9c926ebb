"""Experiment configs: YAML files with ``_base_`` inheritance and typed ``a.b=value`` overrides.

A config file may name a parent with ``_base_: other.yaml`` (a path relative to the file);
the child's mapping is merged into the parent's recursively; ``_base_`` names one file (a list
is refused: chain the files instead), and an empty file is an error. The root of every chain is
``configs/base.yaml``, which defines every key with its default: a key that the base does not
define is an error (a typo never passes silently), and so is a value whose type differs from the
default's (an int where a float is expected is accepted). A file without ``_base_`` other than
base.yaml (a run folder's config.yaml) must set every key of base.yaml. Numeric values are
range-checked at load time (:data:`RANGES`), the message naming the override or file that set
them. Values are YAML, with ``1e-3`` read as a float (PyYAML alone reads it as a string). Each
section is parsed once into a frozen settings record by :func:`section_settings` (called by the
record's ``from_config``, which lives with the concept it configures; docs/architecture.md,
'Config'); builders take those records. The few decisions that span sections (whether a run
needs depth maps, whether it distils) read the resolved :class:`Config` directly.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lib.errors import UserError, writing

BASE_KEY = "_base_"
BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"  # every key, its default
S = TypeVar("S")
MISSING_SHOWN = 5  # missing keys named in the message of a file without _base_


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float.

    YAML 1.1 (PyYAML) wants a dot in a float, so ``1e-3`` would load as the string "1e-3";
    YAML 1.2 and every human read it as 0.001.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` with :class:`_Loader` (no arbitrary objects; ``1e-3`` a float)."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message names file and key."""


class Config(Mapping):
    """A read-only nested mapping with attribute access (``cfg.model.type``)."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self._data = {k: Config(v, f"{path}{k}.") if isinstance(v, Mapping) else v for k, v in data.items()}
        self._path = path

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(f"config has no key '{self._path}{key}'") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Config({self.to_dict()!r})"

    def to_dict(self) -> dict[str, Any]:
        """A deep plain-dict copy (for YAML dumps and checkpoints)."""
        return {k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self._data.items()}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read as a text file ({err})") from None
    try:
        data = _safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if data is None:
        raise ConfigError(f"{path}: empty config file (an experiment starts with '{BASE_KEY}: base.yaml')")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    return data


def _check_type(default: Any, value: Any, where: str) -> Any:
    """Return ``value`` if it may replace ``default``; raise ConfigError otherwise. The elements of
    a list must have the type of the default list's elements (``where[i]`` names a bad one)."""
    if default is None or value is None:
        return value
    if isinstance(default, list) and default and isinstance(value, list):
        return [_check_type(default[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, int):
        return float(value)
    elif isinstance(default, type(value)) or isinstance(value, type(default)):
        return value
    raise ConfigError(f"{where}: expected {type(default).__name__}, got {type(value).__name__} ({value!r})")


def _merge(
    base: dict[str, Any],
    child: Mapping[str, Any],
    source: str,
    prefix: str = "",
    origins: dict[str, str] | None = None,
) -> None:
    """Merge ``child`` into ``base`` in place, rejecting unknown keys and wrong types; ``origins``
    (dotted key -> ``source``) records where each value set here came from."""
    for key, value in child.items():
        name = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base)) or "none"
            raise ConfigError(f"{source}: unknown config key '{name}' (known at this level: {known})")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: '{name}' must be a mapping, got {value!r}")
            _merge(base[key], value, source, f"{name}.", origins)
        else:
            base[key] = _check_type(base[key], copy.deepcopy(value), f"{source}: '{name}'")
            if origins is not None:
                origins[name] = source


def _leaf_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of the values (not sections) of a nested mapping, in file order."""
    keys = []
    for key, value in data.items():
        keys += _leaf_keys(value, f"{prefix}{key}.") if isinstance(value, Mapping) else [f"{prefix}{key}"]
    return keys


def base_reference(path: Path) -> str:
    """How a config file at ``path`` names configs/base.yaml in ``_base_``: relative inside the
    repository, else the absolute path."""
    inside = path.resolve().is_relative_to(BASE_CONFIG.parents[1])
    return os.path.relpath(BASE_CONFIG, path.resolve().parent) if inside else str(BASE_CONFIG)


def _load_root(path: Path, data: dict[str, Any], origins: dict[str, str]) -> dict[str, Any]:
    """A file without ``_base_``: configs/base.yaml itself, or a file that sets every key of it
    (a run folder's config.yaml); it is then checked against base.yaml as a child file is.

    Raises:
        ConfigError: names the file and the keys it lacks (with the ``_base_`` line that would
            give them their defaults), an unknown key or a wrong type.
    """
    if path == BASE_CONFIG.resolve():
        return data
    base = _load_chain(BASE_CONFIG)
    present = set(_leaf_keys(data))
    missing = [key for key in _leaf_keys(base) if key not in present]
    if missing:
        shown = ", ".join(f"'{k}'" for k in missing[:MISSING_SHOWN])
        more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
        raise ConfigError(
            f"{path}: missing config key{'s' if len(missing) > 1 else ''} {shown}{more} (a file without "
            f"'{BASE_KEY}' must set every key; start it with '{BASE_KEY}: "
            f"{base_reference(path)}' to take the defaults of configs/base.yaml)"
        )
    _merge(base, data, str(path), origins=origins)
    return base


def _load_chain(
    path: Path, seen: tuple[Path, ...] = (), origins: dict[str, str] | None = None
) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular _base_ chain")
    data = _read_yaml(path)
    parent = data.pop(BASE_KEY, None)
    if parent is None:
        return _load_root(path, data, {} if origins is None else origins)
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(
            f"{path}: '{BASE_KEY}' must name one parent file, got {parent!r} "
            f"(to combine files, let each name the next with '{BASE_KEY}')"
        )
    merged = _load_chain(path.parent / parent, (*seen, path), origins)
    _merge(merged, data, str(path), origins=origins)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], value), the value parsed as YAML (so typed)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    try:
        value = _safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: invalid value ({err})") from None
    return key.strip().split("."), value


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str], origins: dict[str, str] | None = None
) -> None:
    """Apply ``a.b=value`` strings to a config dict in place, with the merge's checks (``origins``:
    as :func:`_merge`)."""
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(data, nested, f"override {text!r}", origins=origins)


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric config key may take: ``low``/``high`` bounds (None: unbounded),
    each included unless ``*_open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        """Whether ``value`` lies in the range (NaN never does)."""
        if math.isnan(value):
            return False
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


AT_LEAST_0, AT_LEAST_1, ABOVE_0, UNIT = Range(0), Range(1), Range(0, low_open=True), Range(0, 1)
# Every numeric key whose range is plain (configs/base.yaml documents the keys); a list value is
# checked element by element, null passes. Rules that tie keys together (depth_min < depth_max,
# resolution a multiple of downsample) stay with the section's settings record.
RANGES: dict[str, Range] = {
    "experiment.seed": AT_LEAST_0,
    "dataset.resolution": AT_LEAST_1,
    "dataset.downsample": AT_LEAST_1,
    "dataset.max_objs": AT_LEAST_1,
    "dataset.batch_size": AT_LEAST_1,
    "dataset.num_workers": AT_LEAST_0,
    "dataset.random_flip": UNIT,
    "dataset.random_crop": UNIT,
    "dataset.scale": Range(0, 1, high_open=True),
    "dataset.shift": AT_LEAST_0,
    "depth_input.scale": ABOVE_0,
    "rpd.depth_min": ABOVE_0,
    "rpd.depth_max": ABOVE_0,
    "rpd.num_bins": Range(2),
    "rpd.focal": ABOVE_0,
    "rpd.camera_height": ABOVE_0,
    "model.head_conv": AT_LEAST_1,
    "model.depth_branch_channels": AT_LEAST_1,
    "loss.htl_horizon": AT_LEAST_1,
    "loss.depth_branch_weight": AT_LEAST_0,
    "loss.depth_branch_fg_weight": AT_LEAST_0,
    "distill.dualkl.weight": AT_LEAST_0,
    "distill.dualkl.temperature": ABOVE_0,
    "distill.dualkl.head_mass": Range(0, 1, low_open=True),
    "distill.dualkl.gamma": AT_LEAST_0,
    "distill.dualkl.fg_weight": AT_LEAST_0,
    "distill.dualkl.instance_weight": AT_LEAST_0,
    "distill.feature_weight": AT_LEAST_0,
    "distill.affinity_weight": AT_LEAST_0,
    "distill.spearman_weight": AT_LEAST_0,
    "distill.spearman_strength": ABOVE_0,
    "distill.response_weight": AT_LEAST_0,
    "optimizer.lr": ABOVE_0,
    "optimizer.weight_decay": AT_LEAST_0,
    "optimizer.momentum": Range(0, 1, high_open=True),
    "lr_scheduler.warmup_epochs": AT_LEAST_0,
    "lr_scheduler.warmup_start_lr": AT_LEAST_0,
    "lr_scheduler.decay_rate": ABOVE_0,
    "lr_scheduler.decay_list": AT_LEAST_0,
    "trainer.max_epoch": AT_LEAST_1,
    "trainer.eval_start": AT_LEAST_0,
    "trainer.eval_frequency": AT_LEAST_0,
    "trainer.save_frequency": AT_LEAST_0,
    "trainer.last_frequency": AT_LEAST_1,
    "trainer.keep_checkpoints": AT_LEAST_0,
    "trainer.log_interval": AT_LEAST_1,
    "trainer.grad_clip": AT_LEAST_0,
    "trainer.max_iters_per_epoch": AT_LEAST_0,
    "trainer.accumulate_steps": AT_LEAST_1,
    "tester.threshold": UNIT,
    "tester.topk": AT_LEAST_1,
    "tester.score_decimals": Range(0, 12),
}


def check_ranges(data: Mapping[str, Any], origins: Mapping[str, str], source: str) -> None:
    """Check every key of :data:`RANGES` that ``data`` holds (a key it lacks is not judged here).

    Raises:
        ConfigError: ``<where>: <key> must be <range>, got <value>``, where ``<where>`` is the
            override or file that set the value (``origins``), else ``source``.
    """
    for key in RANGES:
        value: Any = data
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        problem = range_problem(key, value)
        if problem:
            raise ConfigError(f"{origins.get(key, source)}: {problem}")


def range_problem(key: str, value: Any) -> str | None:
    """``<key> must be <range>, got <value>`` when ``value`` (a list: any element) lies outside the
    :data:`RANGES` entry of the dotted ``key``; None when it lies inside, or ``key`` has none."""
    allowed = RANGES.get(key)
    values = value if isinstance(value, (list, tuple)) else [value]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if allowed is None or all(allowed.holds(v) for v in numbers):
        return None
    return f"{key} must be {allowed}, got {value!r}"


def check_record_ranges(record: Any, name: str) -> None:
    """:data:`RANGES` applied to the fields of a section's settings record (``name``: the section's
    dotted name), for a record built in code as well as one parsed from a config.

    Raises:
        ConfigError: ``<name>.<field> must be <range>, got <value>``.
    """
    for field in dataclasses.fields(record):
        problem = range_problem(f"{name}.{field.name}", getattr(record, field.name))
        if problem:
            raise ConfigError(problem)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Load a config file with its ``_base_`` chain and the CLI overrides.

    Args:
        path: the experiment YAML (e.g. ``configs/monommkd.yaml``).
        overrides: ``key.sub=value`` strings, applied last.

    Returns:
        The resolved, read-only :class:`Config`.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key, wrong type, bad override, a value
            out of range (:data:`RANGES`, naming the override or file that set it), a file
            without ``_base_`` that lacks keys of configs/base.yaml.
    """
    origins: dict[str, str] = {}
    data = _load_chain(Path(path), origins=origins)
    apply_overrides(data, overrides, origins)
    check_ranges(data, origins, str(Path(path).resolve()))
    return Config(data)


def config_from_dict(data: Mapping[str, Any], overrides: Iterable[str] = (), *, source: str) -> Config:
    """A resolved config kept outside a file (a checkpoint's ``config`` entry) with the CLI
    overrides, checked against :data:`BASE_CONFIG` as a file is: unknown keys and wrong types
    fail naming ``source``; keys it lacks take base.yaml's defaults (a checkpoint of an earlier
    code version lacks the keys added since).

    Raises:
        ConfigError: unknown key, wrong type, bad override, a value out of range.
    """
    merged = _load_chain(BASE_CONFIG)
    origins: dict[str, str] = {}
    _merge(merged, data, source)
    apply_overrides(merged, overrides, origins)
    check_ranges(merged, origins, source)
    return Config(merged)


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf key present in both configs whose value
    differs, in key order. Keys only one side has (a config of another code version) are skipped."""
    diffs = []
    for key in old:
        if key not in new:
            continue
        a, b = old[key], new[key]
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += config_differences(a, b, f"{prefix}{key}.")
        elif (a.to_dict() if isinstance(a, Config) else a) != (b.to_dict() if isinstance(b, Config) else b):
            diffs.append((f"{prefix}{key}", a, b))
    return diffs


def ignored_file_values(path: Path, stored: Mapping[str, Any], used: Mapping[str, Any]) -> list[str]:
    """The values of the config file ``path`` (a run folder's config.yaml) that differ both from
    ``stored`` (the config the file was written from: its checkpoint's) and from ``used`` (the
    config the run uses): edits the run ignores, as ``key: <stored> in the checkpoint, <file
    value> in the file`` lines. A file that cannot be read gives none (it is rewritten anyway)."""
    try:
        written = _read_yaml(path)
    except ConfigError:
        return []
    used_values = {key: new for key, _, new in config_differences(written, used)}
    return [
        f"{key}: {old!r} in the checkpoint, {new!r} in the file"
        for key, old, new in config_differences(stored, written)
        if key in used_values
    ]


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (the run folder's record of what ran)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path), open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)


def section_settings(
    cls: type[S],
    section: Mapping[str, Any],
    *,
    name: str,
    skip: Iterable[str] = (),
    nested: Mapping[str, type] | None = None,
) -> S:
    """A config section as a typed, frozen settings object: the one parse of that section.

    ``cls`` is a dataclass with one field per key of ``section`` (minus ``skip``, keys read
    elsewhere) and no defaults of its own: every default lives in ``configs/base.yaml``
    (docs/architecture.md, "Config"). A sub-section whose field is named in ``nested`` becomes
    that dataclass in turn. Value checks belong in ``cls.__post_init__`` and raise
    :class:`ConfigError` naming ``<name>.<key>``: plain numeric ranges through
    :func:`check_record_ranges` (the one table, :data:`RANGES`), choices and rules that tie keys
    together written there.

    Args:
        cls: the settings dataclass (``@dataclass(frozen=True)``).
        section: the section (a :class:`Config` or a plain mapping).
        name: the section's dotted name, for messages (``"trainer"``, ``"distill.dualkl"``).
        skip: keys of the section that are not fields of ``cls``.
        nested: field name -> settings dataclass of a sub-section.

    Raises:
        ValueError: the fields of ``cls`` and the keys of the section differ (a programming
            error: base.yaml and the dataclass must list the same keys).
    """
    nested = nested or {}
    keys = set(section) - set(skip)
    fields = {f.name for f in dataclasses.fields(cls)}
    if keys != fields:
        raise ValueError(
            f"{cls.__name__} and the config section '{name}' differ: only in the section: "
            f"{sorted(keys - fields)}, only in the class: {sorted(fields - keys)}"
        )
    values = {}
    for key in sorted(keys):
        value = section[key]
        if key in nested:
            value = section_settings(nested[key], value, name=f"{name}.{key}")
        elif isinstance(value, Config):
            value = value.to_dict()
        values[key] = value
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class ExperimentSettings:
    """The ``experiment:`` section (configs/base.yaml documents each key and holds its default).

    Attributes:
        name: the run folder's name inside ``output_dir`` (one path component).
        seed: base seed; rank r seeds torch/numpy/random with seed + r, data workers add their id.
        output_dir: the folder that holds the run folders.
        deterministic: ``torch.use_deterministic_algorithms``.
    """

    name: str
    seed: int
    output_dir: str
    deterministic: bool

    def __post_init__(self) -> None:
        if not self.name or self.name in (".", "..") or "/" in self.name or "\\" in self.name:
            raise ConfigError(
                f"experiment.name must be one folder name (the run is <output_dir>/<name>), got {self.name!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"experiment.seed must be an integer >= 0, got {self.seed!r}")
        if not self.output_dir:
            raise ConfigError("experiment.output_dir: empty path")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ExperimentSettings:
        """The settings of a resolved config (raises ConfigError naming ``experiment.<key>``)."""
        return section_settings(cls, cfg["experiment"], name="experiment")

    @property
    def run_dir(self) -> Path:
        """``<output_dir>/<name>``, the run folder."""
        return Path(self.output_dir) / self.name
