"""KITTI 3D detection evaluation: the devkit protocol in numba (:mod:`lib.eval.kitti_eval`
``evaluate``) and its file I/O (:mod:`lib.eval.kitti_format`). Nothing is imported here, so that
the file I/O and the reports load without numba (seconds)."""
