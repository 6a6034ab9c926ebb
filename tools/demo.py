"""``make demo``: the whole pipeline on CPU in minutes (``tools/reproduce.py --demo``).

Writes a synthetic KITTI-format set with depth maps, trains the LiDAR-depth teacher, the RGB
student and MonoMMKD on it (configs/demo/*.yaml: ResNet-18, 384×128, Car, a few epochs) and
prints the Car AP40 table (outputs/demo/table.md). Extra arguments go to reproduce.py, e.g.
``python tools/demo.py --output-dir /tmp/demo trainer.max_epoch=2``.
"""

from __future__ import annotations

import sys

from reproduce import main as reproduce_main

if __name__ == "__main__":
    sys.exit(reproduce_main(["--demo", *sys.argv[1:]]))
