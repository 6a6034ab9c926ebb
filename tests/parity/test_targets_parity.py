"""Dataset targets against the reference code (docs/parity.md, "Data, network, losses and distillation").

Fixtures (tools/parity/data_targets.py): targets_gupnet.npz from SuperMHP/GUPNet
``code/lib/datasets/kitti.py`` (3 classes) and targets_monoskd.npz from Senwang98/MonoSKD
``lib/datasets/kitti.py`` (DID-M3D type: Car, 7x7 RoI depth targets, the teacher's depth input),
on 8 frames (3 real, 4 synthetic, 1 hand-written edge frame) x 4 fixed augmentations (none, flip,
crop/scale/shift, flip + clipped crop). The test rebuilds the input frames and checks them against
the fixture's checksums, drives our augmentation with the same draws, and compares:

* with the reference switches of configs/base.yaml ``dataset`` (REFERENCE_SWITCHES): every array
  equal (floats within 1e-5 relative plus the reference's float32 rounding, integers and masks
  exact), except the documented reference quirks (_compare);
* with our defaults: each switch alone changes exactly the documented arrays, by the documented
  amount (test_*_default).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lib.config import ConfigError, load_config
from lib.datasets.augment import PCA_EIGVAL, PCA_EIGVEC, color_jitter
from lib.datasets.kitti import DatasetSettings, DepthInputSettings, KittiDataset
from lib.depth_bins import RpdSettings
from lib.kitti_io import read_depth_map

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "parity"
_spec = importlib.util.spec_from_file_location("data_targets", REPO / "tools" / "parity" / "data_targets.py")
dt = importlib.util.module_from_spec(_spec)  # tools/ is not a package: load the script by its path
_spec.loader.exec_module(dt)
INPUTS = json.loads((FIXTURES / "targets_inputs.json").read_text())
REGENERATE = "python tools/parity/make_fixtures.py --gupnet PATH --monoskd PATH"
RESOLUTION = (1280, 384)
BASE_CONFIG = load_config(REPO / "configs" / "base.yaml")

GUPNET_SWITCHES = dict(
    flip_about_width=True,
    projection="reference",
    image_warp="pil",
    heatmap_cell="trunc",
    inverse_affine="reference",
)
REFERENCE_SWITCHES = {
    "gupnet": GUPNET_SWITCHES,
    "monoskd": dict(GUPNET_SWITCHES, depth_warp="bilinear", depth_downsample="area"),
}
MONOSKD_DEPTH_SCALE = 1 / 20480  # depth_input.scale: MonoSKD divides the metres by 256 twice, then by 80
TARGET_KEYS = ("heatmap", "indices", "cls_ids", "mask_2d", "size_2d", "offset_2d", "offset_3d")
TARGET_KEYS += ("depth", "size_3d", "heading_bin", "heading_res")
DID_KEYS = ("vis_depth", "depth_mask")
RTOL = 1e-5
# The reference computes feature-pixel centres in float32 (boxes, label positions and its affine
# are float32): an offset = centre - cell carries the rounding of a coordinate < 512, one ulp 3.05e-5.
OFFSET_ATOL = 3.1e-5


class ScriptedDraws:
    """Stands in for the sample's numpy Generator: returns the case's flip, crop and N(0, 1) draws
    in the order GUPNet takes them (flip, crop, scale, shift x, shift y), then the colour draws
    (operation order, 3 factor draws, 3 lighting coefficients) of MonoSKD's colour cases."""

    def __init__(self, flip: bool, crop: list[float] | None, color: dict | None = None) -> None:
        self.flip_crop = [0.0 if flip else 1.0, 0.0 if crop else 1.0]
        self.crop = list(crop or [])
        self.factors = list(color["uniform"]) if color else []
        self.order = np.array(color["order"]) if color else None
        self.lighting = np.array(color["normal"]) if color else None

    def random(self) -> float:
        return self.flip_crop.pop(0)

    def standard_normal(self, size: int | None = None) -> float | np.ndarray:
        if size is None:
            return self.crop.pop(0)
        out, self.crop = np.array(self.crop[:size]), self.crop[size:]
        return out

    def permutation(self, n: int) -> np.ndarray:
        assert n == 3
        return self.order

    def uniform(self, low: float, high: float) -> float:
        return self.factors.pop(0)

    def normal(self, scale: float, size: int) -> np.ndarray:
        return self.lighting


@pytest.fixture(scope="module")
def kitti_tree(kitti_sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's input frames, rebuilt; fails when they are not the ones the fixture was made from."""
    kitti = dt.build_inputs(kitti_sample_dir, tmp_path_factory.mktemp("targets_parity"))
    digests = dt.input_digests(kitti)
    changed = sorted(k for k in INPUTS["inputs_sha256"] if digests.get(k) != INPUTS["inputs_sha256"][k])
    if changed or set(digests) != set(INPUTS["inputs_sha256"]):
        pytest.fail(f"parity inputs differ from the fixture's ({changed[:4]}): regenerate with {REGENERATE}")
    return kitti


@pytest.fixture(scope="module")
def fixtures() -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for kind in dt.KINDS:
        with np.load(FIXTURES / f"targets_{kind}.npz") as f:
            out[kind] = {k: f[k] for k in f.files}
    return out


def reference(fixtures: dict, kind: str, case: str) -> dict[str, np.ndarray]:
    prefix = f"{case}/"
    return {k[len(prefix) :]: v for k, v in fixtures[kind].items() if k.startswith(prefix)}


def kitti_dataset(
    root: Path, *, depth_scale: float = 1 / 80, train: bool = False, load_depth: bool = False, **dataset
) -> KittiDataset:
    """The dataset of split ``train`` at ``root`` with base.yaml's settings, ``dataset`` keys overridden."""
    settings = replace(DatasetSettings.from_config(BASE_CONFIG), root_dir=str(root), check_split_sizes=False)
    return KittiDataset(
        replace(settings, **dataset),
        "train",
        rpd=RpdSettings.from_config(BASE_CONFIG),
        depth_input=DepthInputSettings(depth_scale),
        train=train,
        load_depth=load_depth,
    )


def ours(kitti: Path, kind: str, case: dict, depth_scale: float = MONOSKD_DEPTH_SCALE, **switches) -> dict:
    """Our sample of a case, with the reference's class list and depth settings for ``kind``."""
    if kind == "gupnet":
        kwargs = dict(writelist=("Car", "Pedestrian", "Cyclist"))
    else:
        kwargs = dict(writelist=("Car",), load_depth=True, depth_scale=depth_scale)
    ds = kitti_dataset(kitti, train=True, **kwargs, **switches)
    ds.sample_rng = lambda index: ScriptedDraws(case["flip"], case["crop"], case.get("color"))
    return ds[case["index"]]


def _pixels(array: np.ndarray) -> np.ndarray:
    rows, cols = dt.sample_pixels().T
    return array[..., rows, cols]


def _close(name: str, actual: np.ndarray, expected: np.ndarray, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=atol, err_msg=name)


def _compare(kind: str, sample: dict, ref: dict[str, np.ndarray], flipped: bool) -> None:
    """Every array of our sample against the reference's (see the documented quirks inline)."""
    t = sample["targets"]
    calib = sample["calib"].copy()
    if flipped:
        # Reference quirk: its re-fitted P2 leaves P2[2, 2] = 0 (never read; ours keeps 1).
        assert ref["calib"][2, 2] == 0.0 and calib[2, 2] == 1.0
        calib[2, 2] = 0.0
    _close("calib", calib, ref["calib"])
    _close("coord_range", sample["coord_range"], ref["coord_range"])
    np.testing.assert_array_equal(sample["info"]["img_size"], ref["img_size"])
    if "rgb_levels" in ref:
        np.testing.assert_array_equal(dt.rgb_levels(_pixels(sample["rgb"])), ref["rgb_levels"], "rgb")
    else:  # colour-augmented: float32 blends, normalised by std ~0.22
        np.testing.assert_allclose(
            _pixels(sample["rgb"]), ref["rgb_pixels"], rtol=RTOL, atol=1e-5, err_msg="rgb"
        )
    for key in TARGET_KEYS + (DID_KEYS if kind == "monoskd" else ()):
        theirs = ref[f"t_{key}"].reshape(t[key].shape)
        if theirs.dtype.kind in "biu":
            np.testing.assert_array_equal(t[key], theirs.astype(t[key].dtype), err_msg=key)
        else:
            _close(key, t[key], theirs, OFFSET_ATOL if key.startswith("offset") else 1e-6)
    if kind == "gupnet":
        return
    _close("depth input", _pixels(sample["depth"][0]), ref["depth_pixels"], atol=1e-9)
    np.testing.assert_array_equal(t["mask_2d"], ref["t_mask_3d"].astype(bool), "mask_3d")
    keep = ref["t_depth_mask"].astype(bool)
    # Reference quirk: att_depth = z - 0 = z on the cells it drops (ours 0); the loss reads only kept cells.
    z = ref["t_depth"].reshape(-1, 1, 1)
    # att = z - vis cancels: its error is that of vis_depth, 1e-5 relative to the depth z.
    error = np.abs(np.where(keep, t["att_depth"] - ref["t_att_depth"], 0))
    assert (error <= 1e-5 * z).all(), f"att_depth: {error.max()}"
    np.testing.assert_array_equal(ref["t_att_depth"][~keep], np.broadcast_to(z, keep.shape)[~keep])
    # box2d_gt (input px) also holds objects the reference skips afterwards (cell outside the grid).
    _close("box2d", t["box2d"][t["mask_2d"]] * 4, ref["t_box2d_gt"][t["mask_2d"]])


CASES = dt.cases()


@pytest.mark.parametrize("kind", list(dt.KINDS))
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reference_switches_equal_reference(kitti_tree: Path, fixtures: dict, kind: str, case: dict) -> None:
    sample = ours(kitti_tree, kind, case, **REFERENCE_SWITCHES[kind])
    _compare(kind, sample, reference(fixtures, kind, case["name"]), case["flip"])


@pytest.mark.parametrize("inverse_affine", ["reference", "exact"])
def test_evaluation_window_and_the_reference_decoding_ratio(
    kitti_tree: Path, fixtures: dict, inverse_affine: str
) -> None:
    """Decoding maps feature px through coord_range. The reference's evaluation window (the whole
    frame) gives GUPNet's bbox_downsample_ratio; the exact one keeps x and covers W·H_in/W_in rows
    about the centre (docs/parity.md, inverse affine)."""
    ds = kitti_dataset(kitti_tree, inverse_affine=inverse_affine)
    for case in CASES:
        ref = reference(fixtures, "gupnet", case["name"])
        width, height = ref["img_size"].astype(np.float64)
        window = ds[case["index"]]["coord_range"].astype(np.float64)
        ratio = (window[1] - window[0]) / (320, 96)
        if inverse_affine == "reference":
            np.testing.assert_array_equal(window, [[0.0, 0.0], [width, height]])
            _close("bbox_downsample_ratio", ratio, ref["bbox_downsample_ratio"])
        else:
            rows = width * RESOLUTION[1] / RESOLUTION[0]  # 372.6 for a 1242 px wide frame
            _close("window", window, [[0.0, (height - rows) / 2], [width, (height + rows) / 2]])
            _close("x ratio", ratio[0], ref["bbox_downsample_ratio"][0])
            _close("y ratio", ratio[1] * height / rows, ref["bbox_downsample_ratio"][1])


def _cells(indices: np.ndarray) -> np.ndarray:
    """(M,) heatmap indices y·W_f + x → (M, 2) cells x, y."""
    return np.stack([indices % 320, indices // 320], axis=1)


def _case(name: str) -> dict:
    return next(c for c in CASES if c["name"] == name)


def _differing(sample: dict, ref: dict, keys: tuple[str, ...]) -> set[str]:
    t = sample["targets"]
    out = set()
    for key in keys:
        theirs = ref[f"t_{key}"].reshape(t[key].shape).astype(t[key].dtype)
        if not np.allclose(t[key], theirs, rtol=RTOL, atol=OFFSET_ATOL):
            out.add(key)
    return out


def test_heatmap_cell_floor_default(kitti_tree: Path, fixtures: dict) -> None:
    """heatmap_cell: floor drops exactly the objects whose projected centre lies in (-1, 0) feature
    px, which GUPNet's int cast puts in cell 0 (the edge frame's left car; flipped, its right one)."""
    switches = dict(REFERENCE_SWITCHES["gupnet"], heatmap_cell="floor")
    for name in ("f7_plain", "f7_flip"):
        ref = reference(fixtures, "gupnet", name)
        t = ours(kitti_tree, "gupnet", _case(name), **switches)["targets"]
        ref_mask = ref["t_mask_2d"].astype(bool)
        in_minus_one_zero = ref_mask & (ref["t_offset_3d"] < 0).any(axis=1)
        assert in_minus_one_zero.sum() == 1, name
        np.testing.assert_array_equal(t["mask_2d"], ref_mask & ~in_minus_one_zero, name)
        kept = t["mask_2d"]
        _close("offset_3d", t["offset_3d"][kept], ref["t_offset_3d"][kept], OFFSET_ATOL)


def test_projection_exact_default(kitti_tree: Path, fixtures: dict) -> None:
    """projection: exact divides by z + P2[2, 3]: the projected 3D centre moves from u to exactly
    u·z/(z + p23) (original px); only the centre's cell and offsets change."""
    switches = dict(REFERENCE_SWITCHES["gupnet"], projection="exact")
    largest = 0.0
    for frame in (0, 2, 3):
        name = f"f{frame}_plain"
        case, ref = _case(name), reference(fixtures, "gupnet", name)
        sample = ours(kitti_tree, "gupnet", case, **switches)
        changed = _differing(sample, ref, TARGET_KEYS)
        assert "offset_3d" in changed and changed <= {"offset_3d", "offset_2d", "indices", "heatmap"}
        P2 = ref["calib"].astype(np.float64)
        width = float(ref["img_size"][0])
        s = RESOLUTION[0] / width  # the whole image warped to the input: centre onto centre
        tx, ty = RESOLUTION[0] / 2 - s * width / 2, RESOLUTION[1] / 2 - s * float(ref["img_size"][1]) / 2
        mask = ref["t_mask_2d"].astype(bool)
        t = sample["targets"]
        np.testing.assert_array_equal(t["mask_2d"], mask)
        centre_ref = ref["t_offset_3d"][mask] + _cells(ref["t_indices"])[mask]
        centre = t["offset_3d"][mask] + _cells(t["indices"])[mask]
        uv_ref = (centre_ref * 4 - [tx, ty]) / s  # original px
        z = ref["t_depth"][mask]  # (K, 1) rect z of the bottom centre = of the 3D centre
        uv_exact = uv_ref * z / (z + P2[2, 3])  # (P2[:2]·X)/(z + p23) = u_ref·z/(z + p23)
        _close("3D centre", centre, (uv_exact * s + [tx, ty]) / 4, OFFSET_ATOL)
        largest = max(largest, float(np.abs(uv_exact - uv_ref).max()))
    assert 0.1 < largest < 1.0  # px; docs/parity.md


def test_flip_about_w_minus_one_default(kitti_tree: Path, fixtures: dict) -> None:
    """flip_about_width: false mirrors about W - 1: boxes move 1 original px left (s/4 feature px)
    and cu' = W - 1 - cu; p03' stays GUPNet's -p03 under the reference projection."""
    switches = dict(REFERENCE_SWITCHES["gupnet"], flip_about_width=False)
    for name in ("f2_flip", "f3_flip"):
        ref = reference(fixtures, "gupnet", name)
        sample = ours(kitti_tree, "gupnet", _case(name), **switches)
        t, mask = sample["targets"], ref["t_mask_2d"].astype(bool)
        s = RESOLUTION[0] / float(ref["img_size"][0])
        np.testing.assert_array_equal(t["mask_2d"], mask)
        shift = (t["offset_2d"] - ref["t_offset_2d"]).astype(np.float64)[mask]
        shift += (_cells(t["indices"]) - _cells(ref["t_indices"]))[mask] * [1, 0]
        _close("box centre shift", shift, np.broadcast_to([-s / 4, 0.0], shift.shape), OFFSET_ATOL)
        _close("size_2d", t["size_2d"], ref["t_size_2d"])
        assert sample["calib"][0, 2] == pytest.approx(ref["calib"][0, 2] - 1, abs=1e-4)
        assert sample["calib"][0, 3] == pytest.approx(ref["calib"][0, 3], abs=1e-4)


def test_image_warp_cv2_default(kitti_tree: Path, fixtures: dict) -> None:
    """image_warp: cv2 samples at pixel centres i (PIL: i + 0.5): a sub-pixel resampling, so most
    grey levels move by a few steps at most; the targets do not change."""
    switches = dict(REFERENCE_SWITCHES["gupnet"], image_warp="cv2")
    for name in ("f0_plain", "f0_crop"):
        ref = reference(fixtures, "gupnet", name)
        sample = ours(kitti_tree, "gupnet", _case(name), **switches)
        levels = dt.rgb_levels(_pixels(sample["rgb"])).astype(int)
        diff = np.abs(levels - ref["rgb_levels"].astype(int))
        assert diff.max() > 0 and np.mean(diff <= 8) > 0.9, name
        assert not _differing(sample, ref, TARGET_KEYS)


def test_depth_defaults(kitti_tree: Path, fixtures: dict) -> None:
    """depth_warp: nearest copies source depths (no value between a surface and the empty sky),
    depth_downsample: valid_mean ignores empty pixels; depth_input.scale 1/80 is 256 x MonoSKD's."""
    name = "f3_crop"
    case, ref = _case(name), reference(fixtures, "monoskd", name)
    base = REFERENCE_SWITCHES["monoskd"]
    reference_scale = ours(kitti_tree, "monoskd", case, **base)["depth"]
    default_scale = ours(kitti_tree, "monoskd", case, depth_scale=1 / 80, **base)["depth"]
    np.testing.assert_allclose(default_scale, reference_scale * 256, rtol=1e-6)

    nearest = ours(kitti_tree, "monoskd", case, **dict(base, depth_warp="nearest"))
    frame = dt.FRAMES[case["index"]]
    source = read_depth_map(kitti_tree / "training" / "depth_dense" / f"{frame:06d}.png")
    scale = np.float32(0.875 * MONOSKD_DEPTH_SCALE)  # crop scale 0.875 of the "crop" draws
    values = _pixels(nearest["depth"][0])
    assert np.isin(values, np.unique(source) * scale).all()
    assert not np.isin(ref["depth_pixels"], np.unique(source) * scale).all()  # bilinear: new depths

    valid_mean = ours(kitti_tree, "monoskd", case, **dict(base, depth_downsample="valid_mean"))
    assert _differing(valid_mean, ref, TARGET_KEYS) == set()
    t = valid_mean["targets"]
    assert not np.array_equal(t["vis_depth"], ref["t_vis_depth"])


MERGE_CASES = dt.merge_cases()


@pytest.mark.parametrize("case", MERGE_CASES, ids=[c["name"] for c in MERGE_CASES])
def test_class_merging_equals_reference(kitti_tree: Path, fixtures: dict, case: dict) -> None:
    """GUPNet's class_merging: Van / Truck paint the Car channel, without regression targets."""
    sample = ours(kitti_tree, "gupnet", case, class_merging=True, **REFERENCE_SWITCHES["gupnet"])
    ref = reference(fixtures, "gupnet", case["name"])
    _compare("gupnet", sample, ref, case["flip"])
    unmerged = reference(fixtures, "gupnet", case["name"].removesuffix("_merge"))
    assert (ref["t_heatmap"][1] > unmerged["t_heatmap"][1]).any()  # the merged class is painted


COLOR_CASES = dt.color_cases()


@pytest.mark.parametrize("case", COLOR_CASES, ids=[c["name"] for c in COLOR_CASES])
def test_color_aug_bgr_equals_reference(kitti_tree: Path, fixtures: dict, case: dict) -> None:
    """color_aug_bgr: true reproduces MonoSKD's colour augmentation at the same draws."""
    switches = dict(REFERENCE_SWITCHES["monoskd"], color_aug=True, color_aug_bgr=True)
    sample = ours(kitti_tree, "monoskd", case, **switches)
    _compare("monoskd", sample, reference(fixtures, "monoskd", case["name"]), case["flip"])


def test_color_aug_rgb_default(kitti_tree: Path, fixtures: dict) -> None:
    """color_aug_bgr: false takes the grey image as BT.601 luma of RGB and the PCA rows in RGB order:
    the same draws give another colour shift; a grey image (R = G = B) differs only by the PCA order."""
    case = COLOR_CASES[0]
    ref = reference(fixtures, "monoskd", case["name"])
    switches = dict(REFERENCE_SWITCHES["monoskd"], color_aug=True)
    rgb = _pixels(ours(kitti_tree, "monoskd", case, **switches)["rgb"])
    diff = np.abs(rgb - ref["rgb_pixels"]) * np.array(dt.IMAGENET_STD)[:, None]  # [0, 1] units
    assert 1e-3 < diff.max() < 0.1
    grey = np.full((4, 4, 3), 0.5, dtype=np.float32)
    draws = dict(case["color"], order=[0, 1, 2])
    ours_grey = color_jitter(grey, ScriptedDraws(False, None, draws))
    ref_grey = color_jitter(grey, ScriptedDraws(False, None, draws), bgr=True)
    eigvec = PCA_EIGVEC @ (PCA_EIGVAL * np.array(draws["normal"]))
    np.testing.assert_allclose(
        ours_grey - ref_grey, np.broadcast_to(eigvec - eigvec[::-1], grey.shape), atol=1e-6
    )


@pytest.mark.parametrize(
    "key", ["projection", "image_warp", "depth_warp", "heatmap_cell", "depth_downsample", "inverse_affine"]
)
def test_unknown_switch_value_names_the_key(kitti_sample_dir: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=f"dataset.{key}: 'PIL' is not one of"):
        kitti_dataset(kitti_sample_dir, **{key: "PIL"})


def test_evaluation_samples_equal_reference_plain(kitti_tree: Path, fixtures: dict) -> None:
    """Without a generator (evaluation) a sample is the reference's un-augmented one."""
    for frame in (0, 7):
        case = _case(f"f{frame}_plain")
        ds = kitti_dataset(
            kitti_tree,
            writelist=("Car",),
            load_depth=True,
            depth_scale=MONOSKD_DEPTH_SCALE,
            **REFERENCE_SWITCHES["monoskd"],
        )
        _compare("monoskd", ds[case["index"]], reference(fixtures, "monoskd", case["name"]), flipped=False)
