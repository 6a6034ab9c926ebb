"""Export the student of a training run as an inference checkpoint (MonoSKD ``pth_transfer``).

    python tools/export_student.py --checkpoint outputs/monommkd/checkpoints/best.pth \\
        --out outputs/monommkd/student.pth

Reads any checkpoint layout (ours, a distillation run's, MonoSKD's ``centernet_rgb.*``;
docs/reference.md, 'Networks and weights' and 'Checkpoint format'), keeps the student detector only (teacher,
adapters, optimizer and RNG state dropped) and writes ``{"model_state": ..., "epoch": ...}``, GUPNet's layout:
the keys are the detector's own, which for ``model.type: gupnet`` are GUPNet's (docs/reference.md, 'State dict
of the default model'), plus the ``config`` and ``task`` of the run when the checkpoint stores them, so that
infer.py and ``-e`` need no ``--config`` and check the file's role. The training-only depth branch
(docs/method.md, 'Framework') is dropped unless ``--keep-depth-branch``. The checkpoint must hold an RGB
detector: a distillation run's student or an RGB run's detector; a depth-input teacher and weights that are
NaN or infinite are refused (lib/models/loading.py ``export_state``; a file without a stored config is not
judged). ``--out`` may not be the input checkpoint, and an existing ``--out`` is replaced only with
``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.errors import UserError, run_cli
from lib.utils.outputs import check_outputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="training checkpoint (.pth)")
    parser.add_argument("--out", required=True, type=Path, help="exported student checkpoint to write")
    parser.add_argument("--keep-depth-branch", action="store_true", help="keep the depth-branch weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser.parse_args(argv)


def export_student(checkpoint: Path, out: Path, *, keep_depth_branch: bool = False) -> int:
    """Write the student-only checkpoint; returns the number of tensors written.

    Raises:
        CheckpointError: the file cannot be read, holds a depth-input teacher (CheckpointRoleError)
            or non-finite weights (lib/models/loading.py ``export_state``).
    """
    from lib.engine.checkpoint import atomic_save  # torch: loaded after --help and the output checks
    from lib.models.depth_branch import DEPTH_BRANCH_NAME
    from lib.models.loading import export_state, open_checkpoint

    ckpt = open_checkpoint(checkpoint, role="export")
    state = export_state(ckpt, role="export")
    if not keep_depth_branch:
        state = {k: v for k, v in state.items() if not k.startswith(f"{DEPTH_BRANCH_NAME}.")}
    record = {"model_state": state, "epoch": int(ckpt.data.get("epoch", -1))}
    if ckpt.config is not None:
        record |= {"config": ckpt.config, "task": ckpt.task}
    atomic_save(record, out)
    return len(state)


def check_output(checkpoint: Path, out: Path, *, overwrite: bool) -> None:
    """Never write onto the input; replace an existing ``out`` only when told.

    Raises:
        UserError: ``out`` is a folder, is ``checkpoint`` (same file by any name: lib/utils/outputs.py),
            or exists without ``overwrite``.
    """
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out names the file to write")
    check_outputs({"--out": out}, {"--checkpoint": checkpoint})
    if out.exists() and not overwrite:
        raise UserError(f"{out}: exists; pass --overwrite to replace it")


def main(argv: list[str] | None = None) -> int:
    """Export; user errors go to :func:`lib.errors.run_cli` (one line, exit 2)."""
    args = parse_args(argv)
    check_output(args.checkpoint, args.out, overwrite=args.overwrite)
    count = export_student(args.checkpoint, args.out, keep_depth_branch=args.keep_depth_branch)
    print(f"wrote {args.out}: {count} tensors of the student detector")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
