"""Regenerate the golden parity fixtures from reference checkouts (docs/parity.md).

    python tools/parity/make_fixtures.py --gupnet PATH --did PATH --monoskd PATH --monodistill PATH \\
        [--out tests/fixtures/parity]

PATH is a work tree of SuperMHP/GUPNet, SPengLiang/DID-M3D, Senwang98/MonoSKD or
monster-ghost/MonoDistill outside this repository (e.g. ``git archive HEAD | tar -x``). Each
fixture module of this folder (:data:`MODULES`) runs the reference code in child processes inside
the checkouts (their top-level package is ``lib``, like ours) and writes its fixtures; a reference
left out skips the fixtures that need it. The tests need only the fixtures.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# Fixture modules of this folder, each with generate(refs, out_dir) -> list[Path].
MODULES = ("data_targets", "network_losses", "schedule_decode", "trajectory")
REFERENCES = ("gupnet", "did", "monoskd", "monodistill")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in REFERENCES:
        parser.add_argument(f"--{name}", type=Path, default=None, help=f"{name} reference checkout")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "parity")
    parser.add_argument(
        "--only", nargs="*", choices=MODULES, default=list(MODULES), help="fixture modules to run"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    refs = {name: getattr(args, name) for name in REFERENCES}
    for name, path in refs.items():
        if path is not None and not path.is_dir():
            print(f"error: {path}: --{name} is not a folder", file=sys.stderr)
            return 2
    sys.path.insert(0, str(HERE))  # the fixture modules import their helpers from this folder
    for module_name in args.only:
        module = importlib.import_module(module_name)
        for path in module.generate(refs, args.out):
            print(f"{module_name}: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
