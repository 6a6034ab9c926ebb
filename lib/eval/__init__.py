"""KITTI 3D detection evaluation: the devkit protocol in numba (:func:`evaluate`) and its file I/O."""

from lib.eval.kitti_eval import FrameObjects, evaluate

__all__ = ["FrameObjects", "evaluate"]
