"""KittiDataset on the real sample frames: sample layout, augmentation consistency, depth, errors."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from lib.config import ConfigError, load_config
from lib.datasets.kitti import DatasetSettings, DepthInputSettings, KittiDataset, build_dataset
from lib.depth_bins import RpdSettings, downsample_depth, expected_depth, soft_targets
from lib.geometry import affine_transform, get_affine_transform, project_to_image, velo_to_rect
from lib.kitti_io import KittiFormatError, read_calib, read_velodyne, write_depth_map, write_split

RESOLUTION = (640, 192)
FEATURE = (160, 48)
DEPTH_SCALE = 1 / 80
BASE_CONFIG = load_config(Path(__file__).resolve().parents[2] / "configs" / "base.yaml")
RPD = RpdSettings.from_config(BASE_CONFIG)


def _write_projected_depth(root):
    """Sparse depth maps (rect z, metres) of the sample scans: nearest point per pixel."""
    for calib_file in sorted((root / "training" / "calib").glob("*.txt")):
        frame = calib_file.stem
        calib = read_calib(calib_file)
        height, width = 375, 1242
        if frame == "000000":
            width, height = 1224, 370
        pts = velo_to_rect(read_velodyne(root / "training" / "velodyne" / f"{frame}.bin")[:, :3], calib)
        pts = pts[pts[:, 2] > 0.5]
        uv, _ = project_to_image(pts, calib.P2)
        col, row = np.round(uv).astype(int).T
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        depth = np.zeros((height, width), np.float32)
        order = np.argsort(-pts[inside, 2])  # far first, so the nearest point is written last
        depth[row[inside][order], col[inside][order]] = pts[inside, 2][order]
        write_depth_map(root / "training" / "depth_dense" / f"{frame}.png", depth)


def _write_depth(root, fn):
    """Synthetic depth maps: fn(width, height) -> (H, W) metres."""
    for frame, (width, height) in {
        "000000": (1224, 370),
        "000001": (1242, 375),
        "000002": (1242, 375),
    }.items():
        write_depth_map(root / "training" / "depth_dense" / f"{frame}.png", fn(width, height))


def _dataset(root, split="trainval", **kwargs):
    kwargs = {"resolution": RESOLUTION, "check_split_sizes": False, **kwargs}
    return kitti_dataset(root, split, **kwargs)


def kitti_dataset(
    root, split: str, *, rpd=RPD, depth_scale=DEPTH_SCALE, train=False, load_depth=False, seed=0, **dataset
):
    """A KittiDataset of the frames at ``root`` with base.yaml's settings, ``dataset`` keys overridden."""
    settings = replace(DatasetSettings.from_config(BASE_CONFIG), root_dir=str(root), **dataset)
    depth_input = DepthInputSettings(depth_scale)
    return KittiDataset(
        settings, split, rpd=rpd, depth_input=depth_input, train=train, load_depth=load_depth, seed=seed
    )


def _inverse(sample):
    """Input pixels → original pixels for a sample: from its crop (coord_range, centred on the crop)."""
    (x0, y0), (x1, y1) = sample["coord_range"].astype(np.float64)
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    return get_affine_transform(center, np.array([x1 - x0, 1.0]), np.array(RESOLUTION), inv=True)


def test_sample_keys_shapes_and_dtypes(kitti_sample):
    _write_projected_depth(kitti_sample)
    ds = _dataset(kitti_sample, train=True, load_depth=True, random_crop=1.0, color_aug=True)
    assert len(ds) == 3
    s = ds[2]
    expected = {
        "rgb": ((3, 192, 640), np.float32),
        "depth": ((1, 192, 640), np.float32),
        "calib": ((3, 4), np.float32),
        "coord_range": ((2, 2), np.float32),
    }
    for key, (shape, dtype) in expected.items():
        assert s[key].shape == shape and s[key].dtype == dtype, key
    assert s["info"]["img_id"] == 2
    assert s["info"]["img_size"].tolist() == [1242, 375] and s["info"]["img_size"].dtype == np.int64
    targets = {
        "heatmap": ((3, 48, 160), np.float32),
        "indices": ((50,), np.int64),
        "cls_ids": ((50,), np.int64),
        "mask_2d": ((50,), np.bool_),
        "size_2d": ((50, 2), np.float32),
        "offset_2d": ((50, 2), np.float32),
        "offset_3d": ((50, 2), np.float32),
        "depth": ((50, 1), np.float32),
        "size_3d": ((50, 3), np.float32),
        "src_size_3d": ((50, 3), np.float32),
        "heading_bin": ((50, 1), np.int64),
        "heading_res": ((50, 1), np.float32),
        "vis_depth": ((50, 7, 7), np.float32),
        "att_depth": ((50, 7, 7), np.float32),
        "depth_mask": ((50, 7, 7), np.bool_),
        "rpd_depth": ((48, 160), np.float32),
        "rpd_mask": ((48, 160), np.bool_),
        "fg_mask": ((48, 160), np.bool_),
        "box2d": ((50, 4), np.float32),
    }
    assert set(s["targets"]) == set(targets)
    for key, (shape, dtype) in targets.items():
        assert s["targets"][key].shape == shape and s["targets"][key].dtype == dtype, key
    # Frame 000002: the Car (line 2) is the one object with targets.
    assert np.flatnonzero(s["targets"]["mask_2d"]).tolist() == [1]
    assert s["targets"]["rpd_mask"].any() and s["targets"]["depth_mask"][1].any()


def test_heatmap_peak_at_projected_3d_centre(kitti_sample):
    ds = _dataset(kitti_sample)
    s, car = ds[2], ds.get_labels(2)[1]
    P2 = read_calib(kitti_sample / "training" / "calib" / "000002.txt").P2
    size = np.array([1242.0, 375.0])
    uv, _ = project_to_image((car.pos + [0, -car.h / 2, 0])[None], P2)
    cell = np.floor(affine_transform(uv[0], get_affine_transform(size / 2, size, np.array(RESOLUTION))) / 4)
    x, y = cell.astype(int)
    heatmap = s["targets"]["heatmap"]
    assert heatmap[1, y, x] == 1.0
    assert np.unravel_index(heatmap[1].argmax(), heatmap[1].shape) == (y, x)
    assert s["targets"]["indices"][1] == y * FEATURE[0] + x
    np.testing.assert_array_equal(s["calib"], P2.astype(np.float32))


def test_augmented_targets_map_back_to_the_labels(kitti_sample):
    """Crop + flip: box targets × 4 through the inverse affine give the (mirrored) label box,
    and the sample's P2 projects the (mirrored) 3D centre onto cell + offset_3d."""
    ds = _dataset(kitti_sample, train=True, random_flip=0.5, random_crop=1.0)
    ped = ds.get_labels(0)[0]  # the pedestrian of frame 000000, slot 0
    width = 1224
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        s = ds[0]
        t = s["targets"]
        assert t["mask_2d"][0]
        flipped = not np.allclose(s["calib"], ds.get_calib(0).P2, atol=1e-3)
        seen.add(flipped)
        box, pos = ped.box2d.copy(), ped.pos.copy()
        if flipped:
            box = np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]])
            pos[0] = -pos[0]
        inv = _inverse(s)
        box_back = np.concatenate(
            [affine_transform(t["box2d"][0, :2] * 4, inv), affine_transform(t["box2d"][0, 2:] * 4, inv)]
        )
        np.testing.assert_allclose(box_back, box, atol=0.05)
        uv, _ = project_to_image((pos + [0, -ped.h / 2, 0])[None], s["calib"].astype(np.float64))
        cell = np.array([t["indices"][0] % FEATURE[0], t["indices"][0] // FEATURE[0]])
        np.testing.assert_allclose(affine_transform((cell + t["offset_3d"][0]) * 4, inv), uv[0], atol=0.05)
        assert t["depth"][0, 0] == pytest.approx(ped.pos[2])
    assert seen == {True, False}  # epochs 0-3 of seed 0 cover both cases


def test_depth_input_is_metres_times_crop_scale_times_depth_scale(kitti_sample):
    # Depth grows by 0.05 m a column: nearest sampling is at most one column (0.05 m) off.
    _write_depth(
        kitti_sample, lambda w, h: np.broadcast_to(5 + 0.05 * np.arange(w, dtype=np.float32), (h, w))
    )
    ds = _dataset(
        kitti_sample, train=True, load_depth=True, random_flip=0.0, random_crop=1.0, depth_scale=DEPTH_SCALE
    )
    for epoch in range(3):
        ds.set_epoch(epoch)
        s = ds[1]
        crop_scale = float(s["coord_range"][1, 0] - s["coord_range"][0, 0]) / 1242
        assert s["depth"].shape == (1, 192, 640)  # one channel; the detector repeats it
        for x, y in [(320, 96), (100, 150), (600, 20)]:
            u, v = affine_transform(np.array([x, y], dtype=np.float64), _inverse(s))
            if not (0 <= u <= 1241 and 0 <= v <= 374):
                assert s["depth"][0, y, x] == 0.0
                continue
            expected = (5 + 0.05 * u) * crop_scale * DEPTH_SCALE
            assert s["depth"][0, y, x] == pytest.approx(expected, abs=0.06 * crop_scale * DEPTH_SCALE)


def test_rpd_depth_and_its_targets_decode_to_downsampled_depth(kitti_sample):
    _write_projected_depth(kitti_sample)
    bins = RPD.bins
    ds = _dataset(
        kitti_sample, train=True, load_depth=True, random_crop=1.0, rpd=RPD, depth_scale=DEPTH_SCALE
    )
    s = ds[0]
    metres_scaled = s["depth"][0] / DEPTH_SCALE  # warped metres × crop scale
    cells = downsample_depth(metres_scaled, 4)  # (48, 160)
    mask = s["targets"]["rpd_mask"]
    np.testing.assert_array_equal(mask, (cells >= 2) & (cells <= 80))
    np.testing.assert_allclose(s["targets"]["rpd_depth"], cells, rtol=1e-6)
    target, _ = soft_targets(s["targets"]["rpd_depth"], bins)  # as the criterion makes them
    decoded = expected_depth(target, bins, axis=0, space="bin")
    inner = mask & (cells > bins.centres()[0]) & (cells < bins.centres()[-1])
    assert inner.sum() > 100
    np.testing.assert_allclose(decoded[inner], cells[inner], rtol=1e-4)


def test_did_depth_targets_match_lidar_depth_in_the_box(kitti_sample):
    _write_projected_depth(kitti_sample)
    ds = _dataset(kitti_sample, load_depth=True, depth_scale=DEPTH_SCALE)
    s = ds[2]
    t = s["targets"]
    z = t["depth"][1, 0]
    keep = t["depth_mask"][1]
    assert keep.sum() >= 10
    # Each kept cell is a mean of valid LiDAR depths sampled in the box (± 1 cell for bilinear).
    cells = downsample_depth(s["depth"][0] / DEPTH_SCALE, 4)  # eval: crop scale 1
    x1, y1, x2, y2 = t["box2d"][1]
    region = cells[int(np.floor(y1)) - 1 : int(np.ceil(y2)) + 2, int(np.floor(x1)) - 1 : int(np.ceil(x2)) + 2]
    valid = region[(region > 0) & (np.abs(region - z) < 3)]
    vis = t["vis_depth"][1][keep]
    assert np.all(np.abs(vis - z) < 3)
    assert vis.min() >= valid.min() - 1e-3 and vis.max() <= valid.max() + 1e-3
    np.testing.assert_allclose(t["att_depth"][1][keep], z - vis, atol=1e-5)
    assert np.all(t["vis_depth"][1][~keep] == 0)
    assert not t["depth_mask"][np.arange(50) != 1].any()


def test_without_depth_maps_depth_targets_are_empty(kitti_sample):
    s = _dataset(kitti_sample)[0]
    assert "depth" not in s
    t = s["targets"]
    assert t["rpd_depth"].shape == (48, 160) and not t["rpd_depth"].any() and not t["rpd_mask"].any()
    assert not t["depth_mask"].any() and not t["vis_depth"].any()
    assert t["fg_mask"].any()  # the pedestrian


def test_augmentation_is_deterministic_per_seed_epoch_index(kitti_sample):
    ds = _dataset(kitti_sample, train=True, random_crop=1.0, color_aug=True, seed=7)
    a0, a1 = ds[0], ds[1]
    b1, b0 = ds[1], ds[0]  # order (and so worker assignment) does not matter
    np.testing.assert_array_equal(a0["rgb"], b0["rgb"])
    np.testing.assert_array_equal(a1["targets"]["heatmap"], b1["targets"]["heatmap"])
    ds.set_epoch(1)
    assert not np.array_equal(ds[0]["coord_range"], a0["coord_range"])
    other_seed = _dataset(kitti_sample, train=True, random_crop=1.0, color_aug=True, seed=8)
    assert not np.array_equal(other_seed[0]["coord_range"], a0["coord_range"])
    ds.set_epoch(0)
    np.testing.assert_array_equal(ds[0]["rgb"], a0["rgb"])


def test_default_collate(kitti_sample):
    _write_projected_depth(kitti_sample)
    ds = _dataset(kitti_sample, train=True, load_depth=True)
    batch = default_collate([ds[i] for i in range(3)])
    assert batch["rgb"].shape == (3, 3, 192, 640) and batch["depth"].shape == (3, 1, 192, 640)
    mask = batch["targets"]["mask_2d"]
    assert mask.dtype == torch.bool and mask.shape == (3, 50)
    assert batch["targets"]["rpd_depth"].shape == (3, 48, 160)
    assert batch["info"]["img_id"].tolist() == [0, 1, 2]
    assert batch["info"]["img_size"].shape == (3, 2)


def test_missing_dataset_shows_expected_tree(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        kitti_dataset(tmp_path / "nowhere", "train")
    message = str(err.value)
    assert message.startswith(f"no dataset at {tmp_path / 'nowhere'} (dataset.root_dir)")
    for part in (
        "ImageSets/",
        "training/",
        "image_2/",
        "calib/",
        "label_2/",
        "depth_dense/",
        "make_depth_maps.py",
    ):
        assert part in message


def test_missing_depth_map_names_file_and_command(kitti_sample):
    with pytest.raises(FileNotFoundError, match="make_depth_maps.py --data-dir"):
        _dataset(kitti_sample, load_depth=True)
    _write_depth(kitti_sample, lambda w, h: np.full((h, w), 10.0, np.float32))
    (kitti_sample / "training" / "depth_dense" / "000001.png").unlink()
    ds = _dataset(kitti_sample, load_depth=True)
    ds[0]
    with pytest.raises(FileNotFoundError) as err:
        ds[1]
    assert "depth_dense/000001.png" in str(err.value)
    assert f"python tools/make_depth_maps.py --data-dir {kitti_sample}" in str(err.value)


def test_malformed_label_names_file_and_line(kitti_sample):
    label = kitti_sample / "training" / "label_2" / "000001.txt"
    label.write_text(label.read_text().splitlines()[0] + "\nCar 0.00 0 1.85 387.63\n")
    with pytest.raises(KittiFormatError, match=r"000001\.txt:2"):
        _dataset(kitti_sample)[1]


def test_test_split_has_no_targets(kitti_sample):
    testing = kitti_sample / "testing"
    for folder in ("image_2", "calib"):
        shutil.copytree(kitti_sample / "training" / folder, testing / folder)
    write_split(kitti_sample / "ImageSets" / "test.txt", [0, 2])
    ds = _dataset(kitti_sample, "test")
    s = ds[1]
    assert "targets" not in s and "depth" not in s
    assert s["info"]["img_id"] == 2 and s["rgb"].shape == (3, 192, 640)


def test_split_size_warning(kitti_sample, caplog):
    with caplog.at_level(logging.WARNING):
        _dataset(kitti_sample, "train", check_split_sizes=True)
    assert "3712" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _dataset(kitti_sample, "train", check_split_sizes=False)
    assert caplog.text == ""


def test_get_labels_and_calib_are_unaugmented(kitti_sample):
    ds = _dataset(kitti_sample, train=True, random_flip=1.0)
    assert ds.get_labels(0)[0].cls_type == "Pedestrian"
    assert ds.get_labels(0)[0].pos[0] == pytest.approx(1.84)
    np.testing.assert_array_equal(
        ds.get_calib(2).P2, read_calib(kitti_sample / "training/calib/000002.txt").P2
    )
    assert not np.allclose(ds[2]["calib"], ds.get_calib(2).P2)  # the sample's P2 is the flipped one


def test_bad_arguments(kitti_sample):
    with pytest.raises(
        ConfigError, match=r"dataset.resolution: \[642, 192\] must be a multiple of downsample"
    ):
        _dataset(kitti_sample, resolution=(642, 192))
    with pytest.raises(ConfigError, match=r"dataset.writelist classes \[.Van.\] are not among"):
        _dataset(kitti_sample, writelist=("Car", "Van"))
    with pytest.raises(ConfigError, match=r"dataset.random_crop must be in \[0, 1\], got 1.5"):
        _dataset(kitti_sample, random_crop=1.5)
    with pytest.raises(ConfigError, match="depth_input.scale must be > 0, got 0"):
        DepthInputSettings(0)
    base = DatasetSettings.from_config(BASE_CONFIG)
    assert base.writelist == ("Car", "Pedestrian", "Cyclist") and base.resolution == (1280, 384)
    assert base.feature_size == (320, 96)


def test_build_dataset_from_config(kitti_sample):
    _write_depth(kitti_sample, lambda w, h: np.full((h, w), 10.0, np.float32))
    root = f"dataset.root_dir={kitti_sample}"
    cfg = load_config("configs/base.yaml", [root, "dataset.resolution=[640, 192]", "model.type=gupnet"])
    ds = build_dataset(cfg, "train", train=True)
    assert ds.resolution == (640, 192) and ds.train and ds.load_depth  # RPD targets of the depth branch
    assert ds.seed == cfg.experiment.seed and ds.depth_scale == cfg.depth_input.scale
    assert ds.bins == RPD.bins and ds.augment_args["random_crop"] == cfg.dataset.random_crop
    assert ds.settings == DatasetSettings.from_config(cfg)
    assert ds[0]["rgb"].shape == (3, 192, 640)
    no_branch = load_config("configs/base.yaml", [root, "model.type=gupnet", "model.depth_branch=false"])
    assert not build_dataset(no_branch, "val", train=False).load_depth
    did = load_config("configs/base.yaml", [root, "model.type=did", "model.depth_branch=false"])
    assert build_dataset(did, "val", train=False).load_depth  # DID-M3D depth targets
    teacher = load_config("configs/base.yaml", [root, "model.input=depth", "dataset.depth_dir=missing"])
    with pytest.raises(FileNotFoundError, match="make_depth_maps"):
        build_dataset(teacher, "val", train=False)
    assert not build_dataset(teacher, "val", train=False, load_depth=False).load_depth
