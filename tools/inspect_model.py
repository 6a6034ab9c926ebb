"""Build the detector of a config, count its parameters, and check that a checkpoint fits it.

Examples::

    python tools/inspect_model.py --config configs/student.yaml
    python tools/inspect_model.py --config configs/base.yaml model.type=gupnet model.depth_branch=false \\
        --checkpoint gupnet_release.pth --json outputs/inspect.json
    python tools/inspect_model.py --checkpoint outputs/student/checkpoints/best.pth   # its stored config

The backbone's ImageNet weights are not loaded unless ``--pretrained`` is given. A checkpoint is
loaded as ``train_val.py -e`` loads it (lib/models/loading.py ``load_detector``: ours, GUPNet,
MonoSKD's baselines and distillation wrapper, MonoDistill, a plain state_dict), strictly, except
that the training-only depth branch may be absent (reported). ``--config`` may be left out for a
checkpoint that stores its config. Exit status: 0 when
the checkpoint fits (or none was given), 1 when it does not (missing / unexpected / mis-shaped keys
listed) or cannot be read (also the --pretrained weights), 2 for a bad command line or config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib.config import ConfigError
from lib.errors import run_cli

if TYPE_CHECKING:  # torch (seconds) loads in load_checked, after --help
    from torch import nn

    from lib.models.loading import LoadedDetector


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="experiment YAML (default: the one the checkpoint stores)")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    parser.add_argument("--checkpoint", default=None, help="checkpoint to load strictly into the model")
    parser.add_argument("--json", default=None, help="write {total, modules, load} as JSON here")
    parser.add_argument("--pretrained", action="store_true", help="also load model.backbone_weights")
    return parser.parse_intermixed_args(argv)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter elements per top-level module or parameter (``mean_size``), in registration order."""
    counts = {name: p.numel() for name, p in model.named_parameters(recurse=False)}
    counts.update({name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()})
    return counts


def load_checked(args: argparse.Namespace) -> tuple[LoadedDetector, dict[str, Any] | None]:
    """The network of the config (``--config``, else the checkpoint's) with the checkpoint's
    weights, and the load record for the JSON; a checkpoint that cannot be read or does not fit
    is recorded (``ok`` false) and the network kept without its weights."""
    from lib.models import CheckpointMismatchError
    from lib.models.checkpoint_io import CheckpointError
    from lib.models.loading import load_detector, open_checkpoint, run_config

    checkpoint, load = None, None
    if args.checkpoint is not None:
        try:
            checkpoint = open_checkpoint(args.checkpoint)
        except CheckpointError as err:  # absent or unreadable file
            load = {"checkpoint": args.checkpoint, "ok": False, "error": str(err)}
    cfg = run_config(args.config, checkpoint, args.overrides)
    try:
        loaded = load_detector(cfg, checkpoint, pretrained=args.pretrained)
    except (CheckpointError, CheckpointMismatchError) as err:  # other role or layout, weights that do not fit
        record = err.report.to_dict() if isinstance(err, CheckpointMismatchError) else {"ok": False}
        load = {"checkpoint": args.checkpoint, **record, "error": str(err)}
        loaded = load_detector(cfg, pretrained=args.pretrained)
    if loaded.report is not None:
        load = {"checkpoint": args.checkpoint, **loaded.report.to_dict()}
    return loaded, load


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        loaded, load = load_checked(args)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:  # --pretrained: weights file absent, download failed, wrong file
        print(f"error: {err}", file=sys.stderr)
        return 1
    model, settings = loaded.detector, loaded.config.model
    modules = count_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{settings.type} / {settings.backbone} (depth branch: {settings.depth_branch})")
    for name, n in modules.items():
        print(f"  {name:<18s} {n:>12,d}")
    print(f"  {'total':<18s} {total:>12,d}  (trainable {trainable:,d})")

    status = 0
    if loaded.report is not None:
        print(f"checkpoint {args.checkpoint} fits: {loaded.report.describe()}")
    elif load is not None:
        print(f"error: {load.pop('error')}", file=sys.stderr)
        status = 1
    if args.json is not None:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"total": total, "trainable": trainable, "modules": modules, "load": load}, f, indent=2)
    return status


if __name__ == "__main__":
    sys.exit(run_cli(main))
