"""Constants that more than one layer means the same way: classes, sizes, grids, clamps.

Each is defined once here; a module that needs one imports it rather than restating the value.
"""

from __future__ import annotations

import numpy as np

# Heatmap channel order of GUPNet (docs/reference.md, '2D heads'): its checkpoints depend on it.
HEATMAP_CLASSES: tuple[str, ...] = ("Pedestrian", "Car", "Cyclist")
CLASS_TO_ID: dict[str, int] = {name: i for i, name in enumerate(HEATMAP_CLASSES)}  # heatmap channel

# The KITTI benchmark's (and devkit's) class order: the evaluator's choices and report rows.
EVAL_CLASSES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
# Its metrics and difficulty levels, in the devkit's order (lib/eval/kitti_eval.py, lib/eval/report.py).
EVAL_METRICS: tuple[str, ...] = ("bbox", "aos", "bev", "3d")
EVAL_DIFFICULTIES: tuple[str, ...] = ("easy", "moderate", "hard")
# Where the evaluator computes BEV overlaps: "auto" takes a CUDA GPU when one is present (lib/eval/iou.py).
EVAL_DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")

# Class mean sizes [h, w, l] in metres, rows in HEATMAP_CLASSES order (docs/reference.md, 'Class mean sizes
# [h, w, l] in metres').
MEAN_SIZES = np.array(
    [
        [1.76255119, 0.66068622, 0.84422524],
        [1.52563191462, 1.62856739989, 3.88311640418],
        [1.73698127, 0.59706367, 1.76282397],
    ],
    dtype=np.float32,
)

NUM_HEADING_BIN = 12  # 12 bins of 30° (docs/reference.md, 'Heading')

# Frame counts of the standard KITTI 3D splits (docs/reference.md, 'GUPNet data pipeline').
KITTI_SPLIT_SIZES: dict[str, int] = {"train": 3712, "val": 3769, "trainval": 7481, "test": 7518}

# ImageNet normalisation of the RGB input (docs/reference.md, 'GUPNet data pipeline').
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# RoI grid: RoIAlign's output and DID-M3D's per-RoI depth targets are both 7 × 7 cells
# (docs/reference.md, 'RoI 3D head' and 'The DID-M3D variant used by SKD').
ROI_SIZE = 7

# The heatmap probability is clamped to [eps, 1 - eps] after the sigmoid, in CornerNet's focal
# loss and before peak picking (docs/reference.md, 'GUPNet losses' and 'Decoding and testing').
HEATMAP_EPS = 1e-4

# m: points closer to (or behind) the camera plane are not projected (LiDAR points for the depth
# maps, box corners for the drawings): their image coordinates blow up or flip.
MIN_PROJECTION_DEPTH = 0.1


# Named cameras of tools/infer.py --intrinsics: fx, fy, cx, cy in pixels of the image size named.
CAMERA_PRESETS: dict[str, tuple[float, float, float, float]] = {
    "kitti": (721.5377, 721.5377, 609.5593, 172.854),  # KITTI object P2, 1242x375
    "kitti360": (552.554261, 552.554261, 682.049453, 238.769549),  # KITTI-360 perspective, 1408x376
    "nuscenes": (1266.417203, 1266.417203, 816.267020, 491.507066),  # nuScenes CAM_FRONT, 1600x900
    "cityscapes": (2262.52, 2265.301791, 1096.98, 513.137),  # Cityscapes left camera, 2048x1024
}

DEPTH_BIN_MODES = ("rpd", "ud", "sid", "lid")  # rpd.mode: the depth-bin layouts (lib/depth_bins.py)
