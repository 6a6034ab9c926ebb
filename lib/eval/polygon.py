"""The convex-quadrilateral intersection area shared by the CPU and CUDA BEV-IoU kernels.

:mod:`lib.eval.iou` (CPU) and :mod:`lib.eval.iou_cuda` (GPU) both run
:func:`quad_intersection_area`; it lives here so that neither imports the other (iou loads the
CUDA module only when asked for). Every product goes through :func:`rounded_mul`, so both targets
round identically and give bit-identical areas.
"""

from __future__ import annotations

from numba import njit
from numba.extending import overload

# Sutherland-Hodgman can at most double the vertex count per clipping edge in degenerate cases
# (vertices within rounding of the clipping line): 4 -> 8 -> 16 -> 32 -> 64.
CLIP_BUFFER = 64


def rounded_mul(a, b):
    """``a * b`` rounded once, never fused with a following addition.

    On the CPU numba emits plain IEEE multiplies. NVVM would contract ``a * b + c`` into an FMA
    (one rounding instead of two), so the CUDA target gets an overload with libdevice ``dmul_rn``,
    which is never contracted (registered in :mod:`lib.eval.iou_cuda`); CPU and GPU then round
    identically and give the same areas.
    """
    return a * b


@overload(rounded_mul, target="generic", inline="always")
def _rounded_mul_generic(a, b):
    def impl(a, b):
        return a * b

    return impl


@njit(cache=True, error_model="numpy")
def quad_intersection_area(ax, az, bx, bz, px, pz, qx, qz):
    """Area of the intersection of two convex quadrilaterals, both clockwise in the x-z plane.

    Args:
        ax, az: (4,) vertices of the subject quadrilateral A.
        bx, bz: (4,) vertices of the clipping quadrilateral B.
        px, pz, qx, qz: (>= 64,) scratch buffers (ping-pong vertex lists), overwritten.

    Returns:
        The area (square metres), 0.0 when the axis-aligned bounds do not overlap.
    """
    # Axis-aligned bounds first: most pairs of a frame are far apart. (Explicit comparisons rather
    # than min/max, whose vararg implementation the CUDA target cannot compile.)
    a_x0 = a_x1 = ax[0]
    a_z0 = a_z1 = az[0]
    b_x0 = b_x1 = bx[0]
    b_z0 = b_z1 = bz[0]
    for v in range(1, 4):
        a_x0 = ax[v] if ax[v] < a_x0 else a_x0
        a_x1 = ax[v] if ax[v] > a_x1 else a_x1
        a_z0 = az[v] if az[v] < a_z0 else a_z0
        a_z1 = az[v] if az[v] > a_z1 else a_z1
        b_x0 = bx[v] if bx[v] < b_x0 else b_x0
        b_x1 = bx[v] if bx[v] > b_x1 else b_x1
        b_z0 = bz[v] if bz[v] < b_z0 else b_z0
        b_z1 = bz[v] if bz[v] > b_z1 else b_z1
    if a_x1 <= b_x0 or b_x1 <= a_x0 or a_z1 <= b_z0 or b_z1 <= a_z0:
        return 0.0
    n = 4
    for k in range(4):
        px[k] = ax[k]
        pz[k] = az[k]
    for k in range(4):
        # Keep the part of polygon p on the inner side of B's edge e0 -> e1. For a clockwise polygon
        # the interior lies where d = ez * (x - e0x) - ex * (z - e0z) >= 0.
        e0x = bx[k]
        e0z = bz[k]
        ex = bx[(k + 1) % 4] - e0x
        ez = bz[(k + 1) % 4] - e0z
        m = 0
        sx = px[n - 1]
        sz = pz[n - 1]
        ds = rounded_mul(ez, sx - e0x) - rounded_mul(ex, sz - e0z)
        for i in range(n):
            cx = px[i]
            cz = pz[i]
            dc = rounded_mul(ez, cx - e0x) - rounded_mul(ex, cz - e0z)
            if (dc >= 0.0) != (ds >= 0.0):
                # t in [0, 1] since ds and dc have opposite signs: stable even for grazing edges.
                t = ds / (ds - dc)
                qx[m] = sx + rounded_mul(t, cx - sx)
                qz[m] = sz + rounded_mul(t, cz - sz)
                m += 1
            if dc >= 0.0:
                qx[m] = cx
                qz[m] = cz
                m += 1
            sx = cx
            sz = cz
            ds = dc
        px, qx = qx, px
        pz, qz = qz, pz
        n = m
        if n < 3:
            return 0.0
    twice_area = 0.0
    for i in range(n):
        j = (i + 1) % n
        twice_area += rounded_mul(px[i], pz[j]) - rounded_mul(px[j], pz[i])
    return abs(twice_area) * 0.5
