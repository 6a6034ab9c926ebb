"""The depth prediction branch ("modal mimicking", docs/method.md, 'Framework' and 'Road Plane
Discretization').

A dense head on the stride-4 neck feature: 3x3 conv -> ReLU -> 1x1 conv to K+1 logits per cell,
K RPD bins plus the "beyond range / no depth" bin (docs/method.md, 'Bins'). It is the detector submodule
``depth_branch``: present in training for teacher and student, optional at inference, and the one
part a GUPNet / DID-M3D checkpoint lacks (``checkpoint_io`` allows exactly this prefix to be absent).
"""

from __future__ import annotations

from torch import nn

from lib.models.heads import HeadSpec, build_head

DEPTH_BRANCH_NAME = "depth_branch"


def build_depth_branch(in_channels: int, *, num_bins: int, mid_channels: int) -> nn.Sequential:
    """(B, in_channels, Hf, Wf) -> (B, num_bins + 1, Hf, Wf) depth-bin logits.

    The last layer starts near zero (normal std 0.001, zero bias), so the initial distribution is
    close to uniform over the K+1 bins.
    """
    if num_bins < 1:
        raise ValueError(f"rpd.num_bins must be >= 1, got {num_bins}")
    spec = HeadSpec(DEPTH_BRANCH_NAME, num_bins + 1, "dense", "small")
    return build_head(spec, in_channels, mid_channels=mid_channels)
