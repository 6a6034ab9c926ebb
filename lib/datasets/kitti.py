"""The KITTI 3D object dataset: frame index → a sample dict (the batch layout below).

Chains kitti_io (files) → augment (flip, crop, colour) → targets (GUPNet, DID-M3D, RPD), as
GUPNet's ``lib/datasets/kitti.py`` does (docs/reference.md, 'GUPNet data pipeline'), plus the teacher's depth
input (docs/method.md, 'Framework'). Layout under ``root_dir`` (the MonoSKD layout, no ``KITTI/`` level)::

    ImageSets/{train,val,trainval,test}.txt
    training/{image_2,calib,label_2,velodyne,depth_dense}/
    testing/{image_2,calib}/

Augmentation is reproducible: each sample draws from its own numpy Generator seeded with
(seed, epoch, index), so the same epoch gives the same samples whatever the number of
workers. The trainer calls :meth:`KittiDataset.set_epoch` before each epoch's iterator is
created (workers copy the dataset when the iterator starts, so with
``persistent_workers=True`` the epoch would never reach them).

Batch layout (one sample; ``default_collate`` stacks them; models, losses, the distiller and
the trainer all read these keys). H, W = ``resolution``; Hf, Wf = H, W / ``downsample``;
M = ``max_objs`` object slots; K = RPD bins:

* ``rgb`` (3, H, W) float32, ImageNet-normalised; ``depth`` (1, H, W) float32, the teacher
  input (only with ``load_depth``; the detector repeats it into its 3 input channels);
  ``calib`` (3, 4) float32 P2 of the augmented sample; ``coord_range`` (2, 2) float32
  [[x0, y0], [x1, y1]], the original-px window the input covers (RoIs and decoding map feature px
  back through it, lib/datasets/augment.py ``input_window``); ``info`` {img_id, img_size (2,) W, H}.
* ``targets`` (labelled splits): heatmap (3, Hf, Wf); indices, cls_ids (M,) int64; mask_2d
  (M,) bool; size_2d, offset_2d, offset_3d (M, 2); depth (M, 1) z in metres; size_3d (M, 3)
  h, w, l minus the class mean; src_size_3d (M, 3); heading_bin (M, 1) int64, heading_res
  (M, 1); box2d (M, 4) feature px; DID-M3D vis_depth, att_depth (M, 7, 7) float32 and
  depth_mask (M, 7, 7) bool; rpd_depth (Hf, Wf) float32, the depth (x crop scale) that the
  criterion turns into (K+1, Hf, Wf) RPD soft targets on the device, with rpd_mask (Hf, Wf)
  bool; fg_mask (Hf, Wf) bool. Depth-derived targets are zeros / False without depth maps, so batches
  always collate (:func:`lib.datasets.targets.build_targets`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from lib.config import Config, ConfigError, ExperimentSettings, check_record_ranges, section_settings
from lib.constants import HEATMAP_CLASSES, IMAGENET_MEAN, IMAGENET_STD, KITTI_SPLIT_SIZES
from lib.datasets.augment import DEPTH_WARPS, IMAGE_WARPS, INVERSE_AFFINES, augment_sample, input_window
from lib.datasets.targets import DEPTH_DOWNSAMPLES, HEATMAP_CELLS, PROJECTIONS, build_targets
from lib.depth_bins import RpdSettings
from lib.kitti_io import (
    Calibration,
    KittiFormatError,
    Object3d,
    find_split_file,
    read_calib,
    read_depth_map,
    read_label,
    read_split,
)

logger = logging.getLogger(__name__)


def depth_map_command(root: Path) -> str:
    """The command that writes the depth maps of the dataset at ``root``."""
    return f"python tools/make_depth_maps.py --data-dir {root}"


def normalize_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] → (3, H, W) float32 ImageNet-normalised (docs/reference.md, 'GUPNet data
    pipeline')."""
    out = np.empty((3, *image.shape[:2]), dtype=np.float32)
    for c in range(3):  # one pass per channel straight into CHW
        np.subtract(image[..., c], IMAGENET_MEAN[c], out=out[c])
        out[c] /= IMAGENET_STD[c]
    return out


def expected_layout(root: Path, depth_dir: str) -> str:
    """The folder tree the dataset expects under ``root`` (for error messages)."""
    return "\n".join(
        [
            f"{root}/",
            "  ImageSets/          train.txt val.txt trainval.txt test.txt (one frame id a line)",
            "  training/",
            "    image_2/          000000.png ...",
            "    calib/            000000.txt ...",
            "    label_2/          000000.txt ...",
            "    velodyne/         000000.bin ...   (input of tools/make_depth_maps.py)",
            f"    {depth_dir + '/':<18}000000.png ...   (with depth: {depth_map_command(root)})",
            "  testing/",
            "    image_2/  calib/",
        ]
    )


@dataclass(frozen=True)
class DatasetSettings:
    """The ``dataset:`` config section (configs/base.yaml, where every default and comment lives).

    The one parse of that section: :func:`build_dataset`, :class:`KittiDataset` and the training
    tools read it from here. Values are checked at parse time (ConfigError naming ``dataset.<key>``).
    ``writelist`` and ``resolution`` become tuples. The switches (``color_aug_bgr`` ...
    ``inverse_affine``) restore GUPNet's / MonoSKD's behaviour where ours differs on purpose
    (docs/parity.md; lib/datasets/augment.py, targets.py).
    """

    root_dir: str
    train_split: str
    val_split: str
    writelist: tuple[str, ...]
    class_merging: bool
    resolution: tuple[int, int]
    downsample: int
    max_objs: int
    batch_size: int
    num_workers: int
    drop_last_train: bool
    random_flip: float
    random_crop: float
    scale: float
    shift: float
    color_aug: bool
    depth_dir: str
    color_aug_bgr: bool
    flip_about_width: bool
    projection: str
    image_warp: str
    depth_warp: str
    heatmap_cell: str
    depth_downsample: str
    inverse_affine: str
    check_split_sizes: bool
    check_on_start: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "writelist", tuple(self.writelist))
        object.__setattr__(self, "resolution", tuple(int(v) for v in self.resolution))
        unknown = sorted(set(self.writelist) - set(HEATMAP_CLASSES))
        if unknown:
            raise ConfigError(
                f"dataset.writelist classes {unknown} are not among {HEATMAP_CLASSES} "
                "(Van/Truck: use class_merging)"
            )
        for key, allowed in SWITCHES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"dataset.{key}: {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        width, height = self.resolution
        if width % self.downsample or height % self.downsample:
            size = list(self.resolution)
            raise ConfigError(
                f"dataset.resolution: {size} must be a multiple of downsample={self.downsample}"
            )
        check_record_ranges(self, "dataset")  # lib/config.py RANGES

    @property
    def feature_size(self) -> tuple[int, int]:
        """(W_f, H_f) of the targets: the resolution / ``downsample``."""
        return self.resolution[0] // self.downsample, self.resolution[1] // self.downsample

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DatasetSettings:
        """The ``dataset`` section of a resolved config (:func:`lib.config.load_config`)."""
        return section_settings(cls, cfg["dataset"], name="dataset")


@dataclass(frozen=True)
class DepthInputSettings:
    """The ``depth_input:`` section: the teacher's input is metres × crop scale × ``scale``
    (docs/method.md, 'Framework')."""

    scale: float

    def __post_init__(self) -> None:
        check_record_ranges(self, "depth_input")  # lib/config.py RANGES

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DepthInputSettings:
        """The ``depth_input`` section of a resolved config."""
        return section_settings(cls, cfg["depth_input"], name="depth_input")


# The dataset's reference switches and their values (the first is ours, docs/parity.md).
SWITCHES = {
    "projection": PROJECTIONS,
    "image_warp": IMAGE_WARPS,
    "depth_warp": DEPTH_WARPS,
    "heatmap_cell": HEATMAP_CELLS,
    "depth_downsample": DEPTH_DOWNSAMPLES,
    "inverse_affine": INVERSE_AFFINES,
}
AUGMENT_KEYS = ("random_flip", "random_crop", "scale", "shift", "color_aug", "color_aug_bgr")
AUGMENT_KEYS += ("flip_about_width", "projection", "image_warp", "depth_warp")


def read_kitti_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a KITTI image, decoded whole: what training reads, and what
    lib/datasets/dataset_check.py reads, so that both refuse the same files.

    Raises:
        FileNotFoundError: no such file. KittiFormatError: empty, truncated or not an image.
    """
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        size = path.stat().st_size
        raise KittiFormatError(
            f"{path}: cannot be decoded as an image ({size} bytes: empty, truncated or corrupt)"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class KittiDataset(Dataset):
    """KITTI frames of one split as sample dicts (the batch layout of this module's docstring).

    A sample holds ``rgb`` (3, H, W) float32 ImageNet-normalised, ``depth`` (1, H, W) float32
    with ``load_depth`` (metres × crop scale × ``depth_input.scale``), ``calib`` (3, 4) float32 P2
    (re-fitted after a flip), ``coord_range`` (2, 2) float32 window of the input in original
    pixels, ``info`` {img_id, img_size (2,) int64 W, H} and, for splits with labels,
    ``targets`` (:func:`lib.datasets.targets.build_targets`).

    Args:
        settings: the ``dataset`` section; its ``root_dir`` holds ImageSets/, training/,
            testing/ (module docstring).
        split: ImageSets/<split>.txt; ``test`` reads testing/ (no labels, no targets), every
            other split reads training/.
        rpd: the ``rpd`` section (bins and target rule of the RPD targets, docs/method.md, 'Bins').
        depth_input: the ``depth_input`` section (the teacher input's scale).
        train: augment (flip, crop, colour) as ``settings`` says; off: the whole image is
            warped to the resolution (evaluation).
        load_depth: read ``<split folder>/<depth_dir>/NNNNNN.png`` for the teacher input and the
            DID / RPD depth targets (zeros / False without).
        seed: base seed of the per-sample generators (``experiment.seed``).

    Raises:
        FileNotFoundError: a missing folder or split file (the message shows the expected tree),
            or with ``load_depth`` a missing depth folder (it names the command that makes the maps).
    """

    def __init__(
        self,
        settings: DatasetSettings,
        split: str,
        *,
        rpd: RpdSettings,
        depth_input: DepthInputSettings,
        train: bool = False,
        load_depth: bool = False,
        seed: int = 0,
    ) -> None:
        self.settings, self.split, self.train, self.load_depth, self.seed = (
            settings,
            split,
            train,
            load_depth,
            seed,
        )
        self.root = Path(settings.root_dir)
        self.resolution, self.downsample = settings.resolution, settings.downsample
        self.feature_size = settings.feature_size
        self.augment_args = {key: getattr(settings, key) for key in AUGMENT_KEYS}
        self.depth_scale = depth_input.scale
        self.bins, self.supervise_beyond = rpd.bins, rpd.supervise_beyond
        self.epoch = 0
        self.has_labels = split != "test"
        self.data_dir = self.root / ("testing" if split == "test" else "training")
        self.depth_dir = self.data_dir / settings.depth_dir
        split_file = find_split_file(self.root, split)  # ImageSets/, else data/splits/
        folders = ["image_2", "calib"] + (["label_2"] if self.has_labels else [])
        missing = [p for p in [split_file, *(self.data_dir / f for f in folders)] if not p.exists()]
        if not self.root.exists():
            raise FileNotFoundError(
                f"no dataset at {self.root} (dataset.root_dir): link KITTI there with "
                "tools/prepare_kitti.py, or write a synthetic set with tools/make_synthetic_kitti.py "
                "--out DIR and pass dataset.root_dir=DIR (configs/demo/* read outputs/demo/data, which "
                "`make demo` writes). Expected layout:\n" + expected_layout(self.root, settings.depth_dir)
            )
        if missing:
            raise FileNotFoundError(
                f"KITTI dataset incomplete at {self.root}: missing {missing[0]}. Expected layout:\n"
                + expected_layout(self.root, settings.depth_dir)
            )
        if load_depth and not self.depth_dir.is_dir():
            raise FileNotFoundError(
                f"depth maps not found: {self.depth_dir}. Make them with: {depth_map_command(self.root)}"
            )
        self.frame_ids = read_split(split_file)
        expected = KITTI_SPLIT_SIZES.get(split)
        if settings.check_split_sizes and expected is not None and len(self.frame_ids) != expected:
            logger.warning(
                "%s has %d frames; KITTI's standard %s split has %d",
                split_file,
                len(self.frame_ids),
                split,
                expected,
            )

    def __len__(self) -> int:
        return len(self.frame_ids)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of ``epoch`` (part of every sample's seed)."""
        self.epoch = int(epoch)

    def sample_rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch: seeded by (seed, epoch, index)."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def get_labels(self, frame_id: int) -> list[Object3d]:
        """The unaugmented labels of a frame (``info['img_id']``, not the item index)."""
        return read_label(self.data_dir / "label_2" / f"{frame_id:06d}.txt")

    def get_calib(self, frame_id: int) -> Calibration:
        """The unaugmented calibration of a frame (``info['img_id']``, not the item index)."""
        return read_calib(self.data_dir / "calib" / f"{frame_id:06d}.txt")

    def _read_image(self, frame_id: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        return read_kitti_image(self.data_dir / "image_2" / f"{frame_id:06d}.png")

    def _read_depth(self, frame_id: int, image_size: tuple[int, int]) -> np.ndarray:
        """(H, W) float32 metres, 0 = none; cropped MonoSKD maps are padded (kitti_io)."""
        path = self.depth_dir / f"{frame_id:06d}.png"
        if not path.is_file():
            raise FileNotFoundError(
                f"depth map not found: {path}. Make the depth maps with: {depth_map_command(self.root)}"
            )
        return read_depth_map(path, image_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        frame_id = self.frame_ids[index]
        image = self._read_image(frame_id)  # (H, W, 3)
        image_size = (image.shape[1], image.shape[0])
        P2 = self.get_calib(frame_id).P2
        depth = self._read_depth(frame_id, image_size) if self.load_depth else None
        s = self.settings
        objects = self.get_labels(frame_id)[: s.max_objs] if self.has_labels else []
        rng = self.sample_rng(index) if self.train else None
        aug = augment_sample(image, depth, objects, P2, rng, resolution=self.resolution, **self.augment_args)

        window = input_window(aug.center, aug.crop_size, self.resolution, inverse_affine=s.inverse_affine)
        sample: dict[str, Any] = {
            "rgb": normalize_image(aug.image),
            "calib": aug.P2.astype(np.float32),
            "coord_range": window.astype(np.float32),
            "info": {"img_id": frame_id, "img_size": np.array(image_size, dtype=np.int64)},
        }
        if aug.depth is not None:
            teacher = aug.depth * np.float32(aug.crop_scale * self.depth_scale)  # (H, W)
            sample["depth"] = teacher[None]  # (1, H, W): the detector repeats it into 3 channels
        if self.has_labels:
            sample["targets"] = build_targets(
                aug.objects,
                aug.P2,
                aug.trans,
                depth=aug.depth,
                crop_scale=aug.crop_scale,
                feature_size=self.feature_size,
                downsample=self.downsample,
                bins=self.bins,
                supervise_beyond=self.supervise_beyond,
                max_objs=s.max_objs,
                writelist=s.writelist,
                class_merging=s.class_merging,
                heatmap_cell=s.heatmap_cell,
                projection=s.projection,
                depth_downsample=s.depth_downsample,
            )
        return sample


def needs_depth_maps(cfg: Config, split: str) -> bool:
    """Whether a run of ``cfg`` needs depth maps on ``split``: the teacher's input
    (``model.input: depth``) or, on labelled splits, the DID-M3D targets (``model.type: did``)
    and the RPD targets of the depth branch (docs/method.md, 'Targets from projected LiDAR')."""
    if cfg.model.input == "depth":
        return True
    if split == "test":
        return False
    return cfg.model.type == "did" or (cfg.model.depth_branch and cfg.loss.depth_branch_weight > 0)


def build_dataset(cfg: Config, split: str, *, train: bool, load_depth: bool | None = None) -> KittiDataset:
    """The dataset of a config's ``dataset``, ``rpd`` and ``depth_input`` sections.

    Args:
        cfg: the resolved config. split: an ImageSets name (e.g. ``cfg.dataset.train_split``).
        train: augment. load_depth: read depth maps; None: :func:`needs_depth_maps`.
    """
    return KittiDataset(
        DatasetSettings.from_config(cfg),
        split,
        rpd=RpdSettings.from_config(cfg),
        depth_input=DepthInputSettings.from_config(cfg),
        train=train,
        load_depth=needs_depth_maps(cfg, split) if load_depth is None else load_depth,
        seed=ExperimentSettings.from_config(cfg).seed,
    )
