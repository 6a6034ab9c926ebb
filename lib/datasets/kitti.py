"""The KITTI 3D object dataset: frame index → a sample dict (the batch layout below).

Chains kitti_io (files) → augment (flip, crop, colour) → targets (GUPNet, DID-M3D, RPD), as
GUPNet's ``lib/datasets/kitti.py`` does (docs/reference.md §3), plus the teacher's depth input
(docs/method.md §1). Layout under ``root_dir`` (the MonoSKD layout, no ``KITTI/`` level)::

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from lib.config import Config, ConfigError
from lib.constants import HEATMAP_CLASSES, IMAGENET_MEAN, IMAGENET_STD, KITTI_SPLIT_SIZES
from lib.datasets.augment import DEPTH_WARPS, IMAGE_WARPS, INVERSE_AFFINES, augment_sample, input_window
from lib.datasets.kitti_io import (
    Calibration,
    Object3d,
    find_split_file,
    read_calib,
    read_depth_map,
    read_label,
    read_split,
)
from lib.datasets.targets import DEPTH_DOWNSAMPLES, HEATMAP_CELLS, PROJECTIONS, build_targets
from lib.depth_bins import DepthBins, RpdSettings

logger = logging.getLogger(__name__)


def depth_map_command(root: Path) -> str:
    """The command that writes the depth maps of the dataset at ``root``."""
    return f"python tools/make_depth_maps.py --data-dir {root}"


def normalize_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] → (3, H, W) float32 ImageNet-normalised (docs/reference.md §3)."""
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


class KittiDataset(Dataset):
    """KITTI frames of one split as sample dicts (the batch layout of this module's docstring).

    A sample holds ``rgb`` (3, H, W) float32 ImageNet-normalised, ``depth`` (1, H, W) float32
    with ``load_depth`` (metres × crop scale × ``depth_scale``), ``calib`` (3, 4) float32 P2
    (re-fitted after a flip), ``coord_range`` (2, 2) float32 window of the input in original
    pixels, ``info`` {img_id, img_size (2,) int64 W, H} and, for splits with labels,
    ``targets`` (:func:`lib.datasets.targets.build_targets`).
    """

    def __init__(
        self,
        root_dir: str | Path,
        split: str,
        *,
        train: bool = False,
        resolution: tuple[int, int] = (1280, 384),
        downsample: int = 4,
        writelist: Sequence[str] = HEATMAP_CLASSES,
        class_merging: bool = False,
        use_dontcare: bool = False,
        max_objs: int = 50,
        random_flip: float = 0.5,
        random_crop: float = 0.5,
        scale: float = 0.4,
        shift: float = 0.1,
        color_aug: bool = False,
        load_depth: bool = False,
        depth_dir: str = "depth_dense",
        depth_scale: float = 1 / 80,
        bins: DepthBins | None = None,
        supervise_beyond: bool = False,
        check_split_sizes: bool = True,
        seed: int = 0,
        color_aug_bgr: bool = False,
        flip_about_width: bool = False,
        projection: str = "exact",
        image_warp: str = "cv2",
        depth_warp: str = "nearest",
        heatmap_cell: str = "floor",
        depth_downsample: str = "valid_mean",
        inverse_affine: str = "exact",
    ) -> None:
        """Index the split's frames and check the folder layout.

        Args:
            root_dir: folder holding ImageSets/, training/, testing/ (module docstring).
            split: ImageSets/<split>.txt; ``test`` reads testing/ (no labels, no targets),
                every other split reads training/.
            train: augment (flip, crop, colour) with the probabilities below; off: the whole
                image is warped to ``resolution`` (evaluation).
            resolution: network input (W, H), a multiple of ``downsample``.
            downsample: feature stride of the targets.
            writelist: classes that get targets, a subset of HEATMAP_CLASSES.
            class_merging: Van and Truck paint the Car heatmap channel (no regression targets).
            use_dontcare: must be False. In GUPNet DontCare boxes (z = −1000 m) are always
                dropped by the 2 m depth filter, so the option never did anything.
            max_objs: target slots; only the first ``max_objs`` label lines are used.
            random_flip, random_crop: probabilities; scale, shift: crop parameters (docs/reference.md §3).
            color_aug: CenterNet colour jitter and PCA lighting (MonoSKD / MonoDistill).
            load_depth: read ``<split folder>/<depth_dir>/NNNNNN.png`` for the teacher input and
                the DID / RPD depth targets (zeros / False without).
            depth_scale: the teacher input is metres × crop scale × depth_scale (docs/method.md §1).
            bins: the RPD bins (docs/method.md §2.2); default DepthBins().
            supervise_beyond: RPD cells without depth go to the extra bin (docs/method.md §2.2).
            check_split_sizes: log a warning when a KITTI split's frame count is not the standard.
            seed: base seed of the per-sample generators.
            color_aug_bgr, flip_about_width, projection, image_warp, depth_warp, heatmap_cell,
                depth_downsample, inverse_affine: switches that restore GUPNet's / MonoSKD's
                behaviour where ours differs on purpose (docs/parity.md; lib/datasets/augment.py,
                targets.py).

        Raises:
            FileNotFoundError: a missing folder or split file (the message shows the expected
                tree), or with ``load_depth`` a missing depth folder (it names the command
                that makes the maps).
            ValueError: a bad argument.
        """
        if use_dontcare:
            raise ValueError(
                "use_dontcare=True is not supported: GUPNet drops DontCare boxes anyway (z < 2 m)"
            )
        unknown = sorted(set(writelist) - set(HEATMAP_CLASSES))
        if unknown:
            raise ValueError(
                f"writelist classes {unknown} are not among {HEATMAP_CLASSES} (Van/Truck: use class_merging)"
            )
        switches = [
            ("projection", projection, PROJECTIONS),
            ("image_warp", image_warp, IMAGE_WARPS),
            ("depth_warp", depth_warp, DEPTH_WARPS),
            ("heatmap_cell", heatmap_cell, HEATMAP_CELLS),
            ("depth_downsample", depth_downsample, DEPTH_DOWNSAMPLES),
            ("inverse_affine", inverse_affine, INVERSE_AFFINES),
        ]
        for key, value, allowed in switches:
            if value not in allowed:
                raise ConfigError(f"dataset.{key}: {value!r} is not one of {', '.join(allowed)}")
        width, height = resolution
        if width % downsample or height % downsample:
            raise ValueError(f"resolution {tuple(resolution)} must be a multiple of downsample={downsample}")
        self.root = Path(root_dir)
        self.split = split
        self.train = train
        self.resolution = (int(width), int(height))
        self.downsample = downsample
        self.feature_size = (width // downsample, height // downsample)
        self.writelist = tuple(writelist)
        self.class_merging = class_merging
        self.max_objs = max_objs
        self.inverse_affine = inverse_affine
        self.augment_args = dict(
            random_flip=random_flip,
            random_crop=random_crop,
            scale=scale,
            shift=shift,
            color_aug=color_aug,
            color_aug_bgr=color_aug_bgr,
            flip_about_width=flip_about_width,
            projection=projection,
            image_warp=image_warp,
            depth_warp=depth_warp,
        )
        self.target_args = dict(
            heatmap_cell=heatmap_cell, projection=projection, depth_downsample=depth_downsample
        )
        self.load_depth = load_depth
        self.depth_scale = depth_scale
        self.bins = bins if bins is not None else DepthBins()
        self.supervise_beyond = supervise_beyond
        self.seed = seed
        self.epoch = 0
        self.has_labels = split != "test"
        self.data_dir = self.root / ("testing" if split == "test" else "training")
        self.depth_dir = self.data_dir / depth_dir

        split_file = find_split_file(self.root, split)  # ImageSets/, else data/splits/
        folders = ["image_2", "calib"] + (["label_2"] if self.has_labels else [])
        missing = [p for p in [split_file, *(self.data_dir / f for f in folders)] if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"KITTI dataset incomplete at {self.root}: missing {missing[0]}. Expected layout:\n"
                + expected_layout(self.root, depth_dir)
            )
        if load_depth and not self.depth_dir.is_dir():
            raise FileNotFoundError(
                f"depth maps not found: {self.depth_dir}. Make them with: {depth_map_command(self.root)}"
            )
        self.frame_ids = read_split(split_file)
        expected = KITTI_SPLIT_SIZES.get(split)
        if check_split_sizes and expected is not None and len(self.frame_ids) != expected:
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
        path = self.data_dir / "image_2" / f"{frame_id:06d}.png"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"KITTI image missing or unreadable: {path}")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

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
        objects = self.get_labels(frame_id)[: self.max_objs] if self.has_labels else []
        rng = self.sample_rng(index) if self.train else None
        aug = augment_sample(image, depth, objects, P2, rng, resolution=self.resolution, **self.augment_args)

        window = input_window(aug.center, aug.crop_size, self.resolution, inverse_affine=self.inverse_affine)
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
                max_objs=self.max_objs,
                writelist=self.writelist,
                class_merging=self.class_merging,
                **self.target_args,
            )
        return sample


def needs_depth_maps(cfg: Config, split: str) -> bool:
    """Whether a run of ``cfg`` needs depth maps on ``split``: the teacher's input
    (``model.input: depth``) or, on labelled splits, the DID-M3D targets (``model.type: did``)
    and the RPD targets of the depth branch (docs/method.md §2.3)."""
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
    d = cfg.dataset
    if d.type != "kitti":
        raise ValueError(f"dataset.type: only 'kitti' is supported, got {d.type!r}")
    rpd = RpdSettings.from_config(cfg)
    return KittiDataset(
        d.root_dir,
        split,
        train=train,
        resolution=tuple(d.resolution),
        downsample=d.downsample,
        writelist=tuple(d.writelist),
        class_merging=d.class_merging,
        use_dontcare=d.use_dontcare,
        max_objs=d.max_objs,
        random_flip=d.random_flip,
        random_crop=d.random_crop,
        scale=d.scale,
        shift=d.shift,
        color_aug=d.color_aug,
        load_depth=needs_depth_maps(cfg, split) if load_depth is None else load_depth,
        depth_dir=d.depth_dir,
        depth_scale=cfg.depth_input.scale,
        bins=rpd.bins,
        supervise_beyond=rpd.supervise_beyond,
        check_split_sizes=d.check_split_sizes,
        seed=cfg.experiment.seed,
        color_aug_bgr=d.color_aug_bgr,
        flip_about_width=d.flip_about_width,
        projection=d.projection,
        image_warp=d.image_warp,
        depth_warp=d.depth_warp,
        heatmap_cell=d.heatmap_cell,
        depth_downsample=d.depth_downsample,
        inverse_affine=d.inverse_affine,
    )
