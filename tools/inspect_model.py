"""Build the detector of a config, count its parameters, and check that a checkpoint fits it.

Examples::

    python tools/inspect_model.py --config configs/student.yaml
    python tools/inspect_model.py --config configs/base.yaml model.type=gupnet model.depth_branch=false \\
        --checkpoint gupnet_release.pth --json outputs/inspect.json

The backbone's ImageNet weights are not loaded unless ``--pretrained`` is given. A checkpoint is
read by the same reader as ``train_val.py -e`` and ``export_student.py``
(lib/models/checkpoint_io.py: ours, GUPNet, MonoSKD's baselines and distillation wrapper,
MonoDistill, a plain state_dict) and loaded strictly, except that the training-only depth
branch may be absent (reported). Exit status: 0 when
the checkpoint fits (or none was given), 1 when it does not (missing / unexpected / mis-shaped keys
listed) or cannot be read (also the --pretrained weights), 2 for a bad command line or config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from torch import nn

from lib.config import ConfigError, load_config
from lib.depth_bins import RpdSettings
from lib.errors import run_cli
from lib.models import CheckpointMismatchError, ModelSettings, build_detector, load_model_state
from lib.models.checkpoint_io import CheckpointError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML (e.g. configs/student.yaml)")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        settings = dataclasses.replace(ModelSettings.from_config(cfg), pretrained=args.pretrained)
        model = build_detector(settings, RpdSettings.from_config(cfg))
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:  # --pretrained: weights file absent, download failed, wrong file
        print(f"error: {err}", file=sys.stderr)
        return 1
    modules = count_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{settings.type} / {settings.backbone} (depth branch: {settings.depth_branch})")
    for name, n in modules.items():
        print(f"  {name:<18s} {n:>12,d}")
    print(f"  {'total':<18s} {total:>12,d}  (trainable {trainable:,d})")

    load, status = None, 0
    if args.checkpoint is not None:
        try:
            report = load_model_state(model, args.checkpoint)
            load = {"checkpoint": args.checkpoint, **report.to_dict()}
            print(f"checkpoint {args.checkpoint} fits: {report.describe()}")
        except CheckpointMismatchError as err:
            load = {"checkpoint": args.checkpoint, **err.report.to_dict()}
            print(f"error: {err}", file=sys.stderr)
            status = 1
        except CheckpointError as err:  # absent or unreadable file, unknown layout
            load = {"checkpoint": args.checkpoint, "ok": False, "error": str(err)}
            print(f"error: {err}", file=sys.stderr)
            status = 1
    if args.json is not None:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"total": total, "trainable": trainable, "modules": modules, "load": load}, f, indent=2)
    return status


if __name__ == "__main__":
    sys.exit(run_cli(main))
