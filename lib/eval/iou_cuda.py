"""CUDA twin of the BEV intersection kernel of :mod:`lib.eval.iou`, one GPU thread per box pair.

Imported only when ``device="cuda"`` (or ``"auto"`` on a machine with a GPU) is asked for, so CPU-only
machines never load ``numba.cuda``. The GPU runs the same :func:`lib.eval.polygon.quad_intersection_area`
as the CPU, with every product rounded by libdevice ``dmul_rn`` so that NVVM cannot contract it into
an FMA: the areas, and hence every AP, are bit-identical to the CPU path.
"""

from __future__ import annotations

import numpy as np
from numba import config, cuda, float64
from numba.extending import overload

from lib.eval.polygon import CLIP_BUFFER, quad_intersection_area, rounded_mul

THREADS_PER_BLOCK = 256

if config.ENABLE_CUDASIM:
    # The simulator runs the kernel as plain Python on its own array type: use the Python source
    # of the area function (nothing is fused there).
    _quad_intersection_area = quad_intersection_area.py_func
else:
    from numba.cuda import libdevice

    _quad_intersection_area = quad_intersection_area

    @overload(rounded_mul, target="cuda", inline="always")
    def _rounded_mul_cuda(a, b):
        def impl(a, b):
            return libdevice.dmul_rn(a, b)

        return impl


@cuda.jit
def _bev_intersections_kernel(det_xs, det_zs, gt_xs, gt_zs, det_offsets, gt_offsets, pair_offsets, out):
    p = cuda.grid(1)
    if p >= out.shape[0]:
        return
    # The frame owning pair p: the last f with pair_offsets[f] <= p (never an empty frame).
    lo = 0
    hi = pair_offsets.shape[0] - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pair_offsets[mid] <= p:
            lo = mid
        else:
            hi = mid
    n_gt = gt_offsets[lo + 1] - gt_offsets[lo]
    j = det_offsets[lo] + (p - pair_offsets[lo]) // n_gt
    i = gt_offsets[lo] + (p - pair_offsets[lo]) % n_gt
    px = cuda.local.array(CLIP_BUFFER, float64)
    pz = cuda.local.array(CLIP_BUFFER, float64)
    qx = cuda.local.array(CLIP_BUFFER, float64)
    qz = cuda.local.array(CLIP_BUFFER, float64)
    out[p] = _quad_intersection_area(det_xs[j], det_zs[j], gt_xs[i], gt_zs[i], px, pz, qx, qz)


def bev_intersections_cuda(
    det_xs: np.ndarray,
    det_zs: np.ndarray,
    gt_xs: np.ndarray,
    gt_zs: np.ndarray,
    det_offsets: np.ndarray,
    gt_offsets: np.ndarray,
    pair_offsets: np.ndarray,
) -> np.ndarray:
    """(P,) BEV intersection area of every in-frame (detection, ground truth) pair, on the GPU.

    Same arguments and result as ``lib.eval.iou._bev_intersections_cpu``: corners (D, 4) / (G, 4)
    from :func:`lib.eval.iou.bev_corners`, (F + 1,) int64 offsets, pair ``pair_offsets[f] + j * n_gt_f + i``.
    """
    num_pairs = int(pair_offsets[-1])
    if num_pairs == 0:
        return np.zeros(0)
    inputs = [cuda.to_device(np.ascontiguousarray(a)) for a in (det_xs, det_zs, gt_xs, gt_zs)]
    inputs += [
        cuda.to_device(np.ascontiguousarray(a, dtype=np.int64))
        for a in (det_offsets, gt_offsets, pair_offsets)
    ]
    out = cuda.device_array(num_pairs, dtype=np.float64)
    blocks = (num_pairs + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    _bev_intersections_kernel[blocks, THREADS_PER_BLOCK](*inputs, out)
    return out.copy_to_host()
