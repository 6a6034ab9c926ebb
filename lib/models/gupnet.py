"""GUPNet (Lu et al., "Geometry Uncertainty Projection Network", ICCV 2021): its RoI 3D heads.

Parameter names and shapes equal GUPNet's (docs/reference.md, 'State dict of the default model'), so
``model_state`` of a GUPNet checkpoint loads strictly into ``GUPNet(backbone="dla34", depth_branch=False)``.
"""

from __future__ import annotations

import torch

from lib.constants import NUM_HEADING_BIN
from lib.models.detector import Detector, RoiBatch
from lib.models.heads import HeadSpec

# In the depth bias 1 / (sigmoid + eps) - 1 (docs/reference.md, 'Geometry Uncertainty Projection, as coded').
BIAS_EPS = 1e-6


def gup_depth(
    *,
    h3d: torch.Tensor,
    h3d_log_variance: torch.Tensor,
    h2d: torch.Tensor,
    focal: torch.Tensor,
    depth_net: torch.Tensor,
) -> torch.Tensor:
    """Geometry Uncertainty Projection depth, as GUPNet's code computes it (docs/reference.md, 'Geometry
    Uncertainty Projection, as coded').

    Geometric depth z_p = h3d * f / h2d with log-variance log sigma_h^2 + 2 (log f - log h2d)
    (the projection scales the std of h3d by f / h2d). The network adds a bias
    b = 1 / (sigmoid(o_0) + 1e-6) - 1, which is >= ~0 (docs/reference.md, 'Known bugs and quirks:
    Non-negative depth bias'; kept so that checkpoints give the same depths), with log-variance
    o_1; the two are independent Laplace/Gaussian terms, so the final log-variance is
    log(sigma_b^2 + sigma_p^2) = logsumexp (paper Eq. 3).

    Args:
        h3d: (N,) 3D height in m (class mean + residual).
        h3d_log_variance: (N,) predicted log sigma_h^2.
        h2d: (N,) 2D box height in original px (already clamped >= 1).
        focal: (N,) f_u = P2[0, 0] in px.
        depth_net: (N, 2) raw depth-head output [bias logit, bias log-variance].

    Returns:
        (N, 2) [depth in m, log-variance of depth].
    """
    depth_geo = h3d * focal / h2d
    log_var_geo = h3d_log_variance + 2.0 * (focal.log() - h2d.log())
    bias = 1.0 / (depth_net[:, 0].sigmoid() + BIAS_EPS) - 1.0
    log_var = torch.logsumexp(torch.stack([depth_net[:, 1], log_var_geo], dim=1), dim=1)
    return torch.stack([depth_geo + bias, log_var], dim=1)


def depth_confidence(depth_log_variance: torch.Tensor) -> torch.Tensor:
    """GUPNet's decoding confidence exp(-sigma_d), sigma_d = exp(log-variance / 2) (docs/reference.md,
    'Decoding and testing')."""
    return torch.exp(-torch.exp(0.5 * depth_log_variance))


class GUPNet(Detector):
    """GUPNet: GUP depth from the 3D height and the 2D box height (``model.type: gupnet``).

    RoI outputs (N rows): depth (N, 2) [depth m, log-variance]; depth_confidence (N,);
    offset_3d (N, 2) feature px; size_3d (N, 3) [h, w, l] residuals to the class mean;
    h3d_log_variance (N, 1); heading (N, 24) = 12 bin logits + 12 residuals.
    """

    model_type = "gupnet"  # its ``model.type`` name (lib/models/build.py DETECTORS)
    roi_heads = (
        HeadSpec("depth", 2, "roi", "xavier"),
        HeadSpec("offset_3d", 2, "roi", "xavier"),
        HeadSpec("size_3d", 4, "roi", "xavier"),
        HeadSpec("heading", 2 * NUM_HEADING_BIN, "roi", "xavier"),
    )

    def predict_3d(self, roi_feat: torch.Tensor, rois: RoiBatch) -> dict[str, torch.Tensor]:
        size_out = self.size_3d(roi_feat)[:, :, 0, 0].float()  # (N, 4): 3 residuals + log sigma_h^2
        size_res, h3d_log_variance = size_out[:, :3], size_out[:, 3:4]
        h3d = self.mean_size[rois.cls, 0] + size_res[:, 0]
        depth = gup_depth(
            h3d=h3d,
            h3d_log_variance=h3d_log_variance[:, 0],
            h2d=(rois.boxes_orig[:, 3] - rois.boxes_orig[:, 1]).clamp(min=1.0),
            focal=rois.calib[:, 0, 0],
            depth_net=self.depth(roi_feat)[:, :, 0, 0].float(),
        )
        return {
            "depth": depth,
            "depth_confidence": depth_confidence(depth[:, 1]),
            "offset_3d": self.offset_3d(roi_feat)[:, :, 0, 0],
            "size_3d": size_res,
            "h3d_log_variance": h3d_log_variance,
            "heading": self.heading(roi_feat)[:, :, 0, 0],
        }
