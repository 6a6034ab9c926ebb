"""Prediction heads, built from spec tables by one helper (docs/reference.md, '2D heads', 'RoI 3D head' and
'The DID-M3D variant used by SKD').

Three head shapes exist in GUPNet / DID-M3D; their layer indices are part of the checkpoint names:

* ``dense``   (2D heads, depth branch): 3x3 conv (bias) -> ReLU -> 1x1 conv.  Params ``.0``, ``.2``.
* ``roi``     (per-RoI vectors): 3x3 conv (bias) -> BN -> ReLU -> global avg-pool -> 1x1 conv,
  read at [:, :, 0, 0].  Params ``.0``, ``.1`` (BN), ``.4``.
* ``roi_map`` (DID per-cell 7x7 maps): 3x3 conv (bias) -> LeakyReLU -> 1x1 conv.  Params ``.0``, ``.2``.

Initialisations (docs/reference.md, '2D heads' to 'RoI 3D head'): ``heatmap`` = PyTorch default with the final
bias at -2.19 (prior probability ~0.1, CenterNet); ``small`` = normal(std 0.001) weights, zero biases;
``xavier`` = xavier-uniform conv weights, zero biases, BN weight 1 / bias 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

HEATMAP_PRIOR_BIAS = -2.19  # = log(0.1 / 0.9): every cell starts at p ~ 0.1

HeadKind = Literal["dense", "roi", "roi_map"]
HeadInit = Literal["heatmap", "small", "xavier"]


@dataclass(frozen=True)
class HeadSpec:
    """One head of a spec table: attribute name on the detector, output channels, shape, init."""

    name: str
    out_channels: int
    kind: HeadKind
    init: HeadInit


def build_head(spec: HeadSpec, in_channels: int, *, mid_channels: int) -> nn.Sequential:
    """The head described by ``spec``, reading ``in_channels`` maps (see module doc for shapes)."""
    first = nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=True)
    last = nn.Conv2d(mid_channels, spec.out_channels, 1, stride=1, padding=0, bias=True)
    if spec.kind == "dense":
        head = nn.Sequential(first, nn.ReLU(inplace=True), last)
    elif spec.kind == "roi":
        head = nn.Sequential(
            first, nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), last
        )
    elif spec.kind == "roi_map":
        head = nn.Sequential(first, nn.LeakyReLU(inplace=True), last)
    else:
        raise ValueError(f"head {spec.name!r}: unknown kind {spec.kind!r}")
    _init_head(head, spec)
    return head


def _init_head(head: nn.Sequential, spec: HeadSpec) -> None:
    if spec.init == "heatmap":
        nn.init.constant_(head[-1].bias, HEATMAP_PRIOR_BIAS)
        return
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            if spec.init == "small":
                nn.init.normal_(m.weight, std=0.001)
            elif spec.init == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                raise ValueError(f"head {spec.name!r}: unknown init {spec.init!r}")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
