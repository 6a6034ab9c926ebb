"""The CUDA BEV kernel gives the CPU's areas bit for bit (on a GPU, and in numba's CUDA simulator)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lib.eval.iou import cuda_is_available

# Random frames (some without detections or ground truth), compared pair by pair.
_COMPARE = textwrap.dedent(
    """
    import numpy as np
    from lib.eval import iou
    from lib.eval.iou_cuda import bev_intersections_cuda

    rng = np.random.default_rng(0)
    n_det, n_gt = np.array([3, 0, 5, 2, 4, 6]), np.array([2, 3, 0, 4, 1, 6])

    def boxes(n):
        return np.stack([rng.uniform(0.5, 4, n), rng.uniform(0.5, 4, n), rng.uniform(0.5, 4, n),
                         rng.uniform(-3, 3, n), np.full(n, 1.6), rng.uniform(10, 16, n),
                         rng.uniform(-np.pi, np.pi, n)], axis=1)

    det, gt = boxes(n_det.sum()), boxes(n_gt.sum())
    det[-1] = gt[-1]  # an identical pair
    det_offsets = np.concatenate([[0], np.cumsum(n_det)])
    gt_offsets = np.concatenate([[0], np.cumsum(n_gt)])
    pair_offsets = iou.frame_pair_offsets(det_offsets, gt_offsets)
    corners = (*iou.bev_corners(det), *iou.bev_corners(gt), det_offsets, gt_offsets, pair_offsets)
    cpu = iou._bev_intersections_cpu(*corners)
    gpu = bev_intersections_cuda(*corners)
    assert np.count_nonzero(cpu) > 5, cpu
    assert np.array_equal(cpu, gpu), np.abs(cpu - gpu).max()
    print("ok", len(cpu))
    """
)


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_is_available(), reason="needs a CUDA GPU")
def test_cuda_bev_intersections_equal_cpu():
    exec(compile(_COMPARE, "<compare>", "exec"), {})


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_is_available(), reason="needs a CUDA GPU")
def test_cuda_device_gives_the_same_report(fixture_root):
    from lib.eval.kitti_eval import evaluate
    from lib.eval.kitti_format import load_labels, load_results
    from lib.kitti_io import read_split

    case = fixture_root / "case_1"
    frames = read_split(case / "ImageSets" / "val.txt")
    gt, det = load_labels(case / "label_2", frames), load_results(case / "pred", frames)
    assert evaluate(gt, det, device="cuda") == evaluate(gt, det, device="cpu")


def test_cuda_kernel_in_simulator():
    """Runs the kernel's indexing logic on the CPU with NUMBA_ENABLE_CUDASIM (a fresh process, so this
    process never imports numba.cuda)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run(
        [sys.executable, "-c", _COMPARE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


def test_cpu_only_evaluation_never_imports_numba_cuda():
    code = (
        "import sys, numpy as np\n"
        "from lib.eval.iou import bev_overlaps\n"
        "bev_overlaps(np.ones((1, 7)), np.ones((1, 7)), device='cpu')\n"
        "assert 'numba.cuda' not in sys.modules and 'lib.eval.iou_cuda' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_unknown_device_is_rejected():
    from lib.eval.iou import resolve_device

    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    assert resolve_device("cpu") == "cpu"
    assert np.isin(resolve_device("auto"), ["cpu", "cuda"])
