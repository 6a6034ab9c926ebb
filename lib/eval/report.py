"""Text table and JSON file of :func:`lib.eval.kitti_eval.evaluate` results.

The table uses the layout KITTI users know from OpenPCDet / kitti-object-eval-python::

    Car AP_R40@0.70, 0.70, 0.70:
    bbox AP:97.1234, 90.1234, 88.1234
    bev  AP:...
    3d   AP:...
    aos  AP:...

with the overlaps of bbox, BEV and 3D after the ``@``, and ``-`` where the devkit outputs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

_ROWS = (("bbox", "bbox"), ("bev", "bev "), ("3d", "3d  "), ("aos", "aos "))


def format_table(reports: dict[str, dict]) -> str:
    """The KITTI table of every AP mode in ``reports`` (``{"ap40": report, "ap11": report}``)."""
    blocks = []
    for report in reports.values():
        mode = report["ap_mode"]
        blocks.append(
            f"KITTI AP|R{mode}: {report['num_frames_evaluated']} frames evaluated "
            f"of {report['num_frames_listed']} listed ({report['frames_evaluated_rule']})"
        )
        for name, metrics in report["ap"].items():
            ov_2d = report["min_overlap"][name]
            ov_3d = report["min_overlap_3d"][name]
            lines = [f"{name} AP_R{mode}@{ov_2d:.2f}, {ov_3d:.2f}, {ov_3d:.2f}:"]
            for metric, label in _ROWS:
                values = metrics[metric]
                cells = "-, -, -" if values is None else ", ".join(f"{v:.4f}" for v in values.values())
                lines.append(f"{label} AP:{cells}")
            blocks.append("\n".join(lines))
        blocks += [f"warning: {w}" for w in report.get("warnings", ())]
    return "\n".join(blocks) + "\n"


def write_json(path: str | Path, reports: dict[str, dict]) -> None:
    """Write the reports as JSON (``{"ap40": {...}, "ap11": {...}}``, the fixtures' schema per mode)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reports, indent=1) + "\n")
