"""Experiment configs: YAML files with ``_base_`` inheritance and typed ``a.b=value`` overrides.

A config file may name a parent with ``_base_: other.yaml`` (a path relative to the file);
the child's mapping is merged into the parent's recursively; ``_base_`` names one file (a list
is refused: chain the files instead), and an empty file is an error. The root of every chain is
``configs/base.yaml``, which defines every key with its default: a key that the base does not
define is an error (a typo never passes silently), and so is a value whose type differs from the
default's (an int where a float is expected is accepted). Values are YAML, with ``1e-3`` read
as a float (PyYAML alone reads it as a string). Each section is parsed once into a frozen
settings record by :func:`section_settings` (called by the record's ``from_config``, which lives
with the concept it configures; docs/architecture.md, 'Config'); builders take those records. The few
decisions that span sections (whether a run needs depth maps, whether it distils) read the
resolved :class:`Config` directly.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lib.errors import UserError, writing

BASE_KEY = "_base_"
BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"  # every key, its default
S = TypeVar("S")


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


def _merge(base: dict[str, Any], child: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Merge ``child`` into ``base`` in place, rejecting unknown keys and wrong types."""
    for key, value in child.items():
        name = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base)) or "none"
            raise ConfigError(f"{source}: unknown config key '{name}' (known at this level: {known})")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: '{name}' must be a mapping, got {value!r}")
            _merge(base[key], value, source, f"{name}.")
        else:
            base[key] = _check_type(base[key], copy.deepcopy(value), f"{source}: '{name}'")


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular _base_ chain")
    data = _read_yaml(path)
    parent = data.pop(BASE_KEY, None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(
            f"{path}: '{BASE_KEY}' must name one parent file, got {parent!r} "
            f"(to combine files, let each name the next with '{BASE_KEY}')"
        )
    merged = _load_chain(path.parent / parent, (*seen, path))
    _merge(merged, data, str(path))
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


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> None:
    """Apply ``a.b=value`` strings to a config dict in place, with the merge's checks."""
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(data, nested, f"override {text!r}")


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Load a config file with its ``_base_`` chain and the CLI overrides.

    Args:
        path: the experiment YAML (e.g. ``configs/monommkd.yaml``).
        overrides: ``key.sub=value`` strings, applied last.

    Returns:
        The resolved, read-only :class:`Config`.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key, wrong type, bad override.
    """
    data = _load_chain(Path(path))
    apply_overrides(data, overrides)
    return Config(data)


def config_from_dict(data: Mapping[str, Any], overrides: Iterable[str] = (), *, source: str) -> Config:
    """A resolved config kept outside a file (a checkpoint's ``config`` entry) with the CLI
    overrides, checked against :data:`BASE_CONFIG` as a file is: unknown keys and wrong types
    fail naming ``source``; keys it lacks take base.yaml's defaults.

    Raises:
        ConfigError: unknown key, wrong type, bad override.
    """
    merged = _load_chain(BASE_CONFIG)
    _merge(merged, data, source)
    apply_overrides(merged, overrides)
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
    that dataclass in turn. Value checks (allowed choices, ranges) belong in ``cls.__post_init__``
    and raise :class:`ConfigError` naming ``<name>.<key>``.

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
