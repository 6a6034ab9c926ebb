"""Dataset-wide constants shared by the data pipeline, the models and decoding."""

from __future__ import annotations

import numpy as np

# Heatmap channel order of GUPNet (REFERENCE §1.3): its checkpoints depend on it.
CLASSES: tuple[str, ...] = ("Pedestrian", "Car", "Cyclist")
CLASS_TO_ID: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

# Class mean sizes [h, w, l] in metres, rows in CLASSES order (REFERENCE §1.7).
MEAN_SIZES = np.array(
    [
        [1.76255119, 0.66068622, 0.84422524],
        [1.52563191462, 1.62856739989, 3.88311640418],
        [1.73698127, 0.59706367, 1.76282397],
    ],
    dtype=np.float32,
)

NUM_HEADING_BIN = 12  # 12 bins of 30° (REFERENCE §1.6)

# Frame counts of the standard KITTI 3D splits (REFERENCE §3).
KITTI_SPLIT_SIZES: dict[str, int] = {"train": 3712, "val": 3769, "trainval": 7481, "test": 7518}

# ImageNet normalisation of the RGB input (REFERENCE §3).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
