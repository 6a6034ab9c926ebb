"""Inference on your own images (lib/inference.py, lib/inference_io.py, tools/infer.py).

A small random-initialised DID-M3D (configs/demo: ResNet-18, 384x128) runs on the three real
KITTI frames with their calib files, on a folder of synthetic frames with explicit intrinsics and
on a short video of synthetic frames.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lib.config import load_config
from lib.datasets.kitti import build_dataset
from lib.datasets.synthetic import generate_frame
from lib.depth_bins import RpdSettings
from lib.engine.tester import predict_split
from lib.errors import run_cli
from lib.geometry import project_to_image
from lib.inference import (
    CameraError,
    Frame,
    TorchBackend,
    decode_outputs,
    intrinsics_projection,
    make_batch,
    pad_to_aspect,
    parse_intrinsics,
    prepare_input,
    read_projection,
)
from lib.inference_io import VideoWriter
from lib.kitti_io import read_calib
from lib.models.build import ModelSettings, build_detector
from lib.models.loading import load_detector

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "demo" / "student.yaml"
RESOLUTION = (384, 128)  # configs/demo
SYNTHETIC_SIZE = (480, 160)


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", REPO_ROOT / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(scope="module")
def infer_tool():
    return load_tool("infer")


@pytest.fixture(scope="module")
def checkpoint(module_tmp: Path) -> Path:
    """A random-initialised demo student, saved as a training checkpoint (``model_state``)."""
    torch.manual_seed(0)
    cfg = load_config(CONFIG)
    model = replace(ModelSettings.from_config(cfg), pretrained=False)
    detector = build_detector(model, RpdSettings.from_config(cfg))
    path = module_tmp / "random.pth"
    torch.save({"model_state": detector.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def synthetic_frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], np.ndarray]:
    """Three synthetic frames (RGB) and their camera's projection."""
    frames = [
        generate_frame(np.random.default_rng(i), image_size=SYNTHETIC_SIZE, num_objects=(2, 3))
        for i in range(3)
    ]
    return [f.image for f in frames], frames[0].calib.P2


def sample_config(root: Path):
    """base.yaml with the demo's input resolution, reading the KITTI tree at ``root``."""
    overrides = [
        f"dataset.root_dir={root}",
        f"dataset.resolution={list(RESOLUTION)}",
        "dataset.check_split_sizes=false",
    ]
    return load_config(REPO_ROOT / "configs" / "base.yaml", overrides)


def run_infer(tool, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = run_cli(tool.main, ["--config", str(CONFIG), "--no-progress", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prepare_input_equals_the_evaluation_sample(kitti_sample_dir: Path) -> None:
    dataset = build_dataset(sample_config(kitti_sample_dir), "trainval", train=False, load_depth=False)
    for index in range(len(dataset)):
        sample = dataset[index]
        frame_id = sample["info"]["img_id"]
        image = cv2.imread(str(kitti_sample_dir / "training" / "image_2" / f"{frame_id:06d}.png"))[..., ::-1]
        net = prepare_input(image, dataset.get_calib(frame_id).P2, resolution=RESOLUTION)
        assert np.array_equal(net.rgb, sample["rgb"])
        assert np.array_equal(net.calib.astype(np.float32), sample["calib"])
        assert np.array_equal(net.coord_range.astype(np.float32), sample["coord_range"])
        assert not net.pad.any()  # KITTI frames are never padded


@pytest.mark.parametrize(
    ("size", "pad"),
    [((640, 360), (220, 0)), ((1200, 200), (0, 100)), ((1242, 375), (0, 0)), ((1224, 370), (0, 0))],
)
def test_pad_to_aspect_centres_the_image_and_moves_the_camera(
    size: tuple[int, int], pad: tuple[int, int]
) -> None:
    width, height = size
    image = np.full((height, width, 3), 200, np.uint8)
    P = intrinsics_projection(500.0, 510.0, width / 2 - 7, height / 2 + 3)
    padded, P_padded, got = pad_to_aspect(image, P, (384, 128))
    assert tuple(got) == pad
    assert padded.shape == (height + 2 * pad[1], width + 2 * pad[0], 3)
    assert (padded[pad[1] : pad[1] + height, pad[0] : pad[0] + width] == 200).all()
    assert padded.sum() == image.sum()  # black padding only
    if any(pad):
        assert padded.shape[0] / padded.shape[1] == pytest.approx(128 / 384, rel=0.01)
    points = np.array([[1.0, 0.5, 10.0], [-3.0, 1.2, 25.0]])
    uv, _ = project_to_image(points, P)
    uv_padded, _ = project_to_image(points, P_padded)
    np.testing.assert_allclose(uv_padded - uv, [pad, pad], atol=1e-9)  # the pixels moved with the image


def test_read_projection_kitti_raw_and_errors(kitti_sample_dir: Path, tmp_path: Path) -> None:
    calib_file = kitti_sample_dir / "training" / "calib" / "000001.txt"
    np.testing.assert_array_equal(read_projection(calib_file), read_calib(calib_file).P2)
    P = np.arange(12, dtype=float).reshape(3, 4) + 1
    raw = tmp_path / "calib_cam_to_cam.txt"
    raw.write_text(
        "calib_time: 09-Jan-2011 13:57:47\ncorner_dist: 9.95e-02\n"
        "P_rect_00: " + " ".join(["1"] * 12) + "\nP_rect_02: " + " ".join(f"{v:g}" for v in P.ravel()) + "\n"
    )
    np.testing.assert_array_equal(read_projection(raw), P)
    raw.write_text("P_rect_02: 1 2 3\n")
    with pytest.raises(CameraError, match=r"calib_cam_to_cam.txt:1: P_rect_02 needs 12"):
        read_projection(raw)
    raw.write_text("P_rect_00: " + " ".join(["1"] * 12) + "\n")
    with pytest.raises(CameraError, match=r"no P2 or P_rect_02 line"):
        read_projection(raw)
    np.testing.assert_array_equal(
        parse_intrinsics("700,710.5,600,180"), intrinsics_projection(700, 710.5, 600, 180)
    )
    for bad in ("700,710,600", "a,b,c,d", "-700,700,600,180"):
        with pytest.raises(CameraError, match="--intrinsics"):
            parse_intrinsics(bad)


def test_infer_on_kitti_frames_equals_evaluation(
    infer_tool, checkpoint: Path, kitti_sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The KITTI frames with their calib folder give the result lines of the evaluation path."""
    training = kitti_sample_dir / "training"
    out = tmp_path / "out"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(training / "image_2"),
        "--calib",
        str(training / "calib"),
    ]
    code, stdout, stderr = run_infer(
        infer_tool, [*argv, "--out", str(out), "--score-threshold", "0.05"], capsys
    )
    assert code == 0, stderr
    assert "3 frames" in stdout
    cfg = load_config(CONFIG, ["tester.threshold=0.05"])
    dataset = build_dataset(sample_config(kitti_sample_dir), "trainval", train=False, load_depth=False)
    detector = load_detector(cfg, checkpoint).detector
    expected = predict_split(
        detector, DataLoader(dataset, batch_size=2), device=torch.device("cpu"),
        topk=cfg.tester.topk, threshold=0.05, backprojection=cfg.tester.backprojection, progress=False,
    )  # fmt: skip
    assert sum(len(v) for v in expected.values()) > 0
    # the evaluation keeps a DID-M3D peak by its heatmap value; infer keeps the written score
    # (peak x depth confidence) >= 0.05, the value its files hold and visualize.py filters on
    scored = {f: [o for o in objects if o.score >= 0.05] for f, objects in expected.items()}
    assert 0 < sum(len(v) for v in scored.values()) < sum(len(v) for v in expected.values())
    assert f"{sum(len(v) for v in scored.values())} objects with score >= 0.05" in stdout
    for frame_id, objects in scored.items():
        lines = (out / "data" / f"{frame_id:06d}.txt").read_text().splitlines()
        assert lines == [o.to_line(cfg.tester.score_decimals) for o in objects]
        assert all(float(line.split()[-1]) >= 0.05 for line in lines)
        panel = cv2.imread(str(out / "vis" / f"{frame_id:06d}.png"))
        assert panel is not None and panel.shape[1] > 960
    # an existing, non-empty output folder is not written into without --force
    code, _, stderr = run_infer(infer_tool, [*argv, "--out", str(out)], capsys)
    assert code == 2 and "not empty" in stderr and stderr.count("\n") == 1


def test_infer_on_a_folder_with_intrinsics(
    infer_tool, checkpoint: Path, synthetic_frames, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--intrinsics gives the results of per-image calib files holding the same camera."""
    images, P = synthetic_frames
    folder, calib_dir = tmp_path / "frames", tmp_path / "calib"
    folder.mkdir()
    calib_dir.mkdir()
    P_pinhole = P.copy()
    P_pinhole[:, 3] = 0.0  # --intrinsics has no translation column
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"frame_{i}.png"), image[..., ::-1])
        (calib_dir / f"frame_{i}.txt").write_text(
            "\n".join(f"P{k}: " + " ".join(repr(float(v)) for v in P_pinhole.ravel()) for k in range(4))
            + "\nR0_rect: 1 0 0 0 1 0 0 0 1\nTr_velo_to_cam: 0 -1 0 0 0 0 -1 0 1 0 0 0\n"
        )
    intrinsics = ",".join(repr(float(v)) for v in (P[0, 0], P[1, 1], P[0, 2], P[1, 2]))
    base = ["--checkpoint", str(checkpoint), "--input", str(folder), "--score-threshold", "0", "--no-render"]
    code, stdout, stderr = run_infer(
        infer_tool, [*base, "--intrinsics", intrinsics, "--out", str(tmp_path / "a")], capsys
    )
    assert code == 0, stderr
    code, _, stderr = run_infer(
        infer_tool, [*base, "--calib", str(calib_dir), "--out", str(tmp_path / "b")], capsys
    )
    assert code == 0, stderr
    for i in range(len(images)):
        a = (tmp_path / "a" / "data" / f"frame_{i}.txt").read_text()
        assert a and a == (tmp_path / "b" / "data" / f"frame_{i}.txt").read_text()
        assert 0 < len(a.splitlines()) <= 50  # threshold 0: the top-K peaks with a valid box


def test_infer_on_a_video(infer_tool, checkpoint: Path, synthetic_frames, tmp_path: Path, capsys) -> None:
    images, P = synthetic_frames
    video = tmp_path / "drive.mp4"
    with VideoWriter(video, fps=5.0) as writer:
        for image in images + images[:1]:
            writer.write(image)
    out, rendered = tmp_path / "out", tmp_path / "rendered.mp4"
    intrinsics = f"{P[0, 0]},{P[1, 1]},{P[0, 2]},{P[1, 2]}"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(video),
        "--intrinsics",
        intrinsics,
        "--out",
        str(out),
    ]
    code, stdout, stderr = run_infer(
        infer_tool, [*argv, "--video-out", str(rendered), "--batch-size", "3"], capsys
    )
    assert code == 0, stderr
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"drive_{i:06d}.txt" for i in range(4)]
    capture = cv2.VideoCapture(str(rendered))
    count, shape = 0, None
    while (frame := capture.read())[0]:
        count, shape = count + 1, frame[1].shape
    capture.release()
    assert (
        count == 4
        and shape[1] > 960
        and shape[0] == round(SYNTHETIC_SIZE[1] * 960 / SYNTHETIC_SIZE[0]) // 2 * 2
    )
    assert not (out / "vis").exists()


def test_infer_errors_are_one_line(
    infer_tool, checkpoint: Path, kitti_sample_dir: Path, synthetic_frames, tmp_path: Path, capsys
) -> None:
    images, _ = synthetic_frames
    training = kitti_sample_dir / "training"
    base = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), "--force"]
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    empty_calib = tmp_path / "calib"  # beside --out: an output inside an input folder is refused
    empty_calib.mkdir()
    cases = {
        "a.png: not a readable image": ["--input", str(folder), "--intrinsics", "700,700,300,100"],
        "000000.txt: no calib file for image 000000": [
            "--input",
            str(training / "image_2"),
            "--calib",
            str(empty_calib),
        ],
        "mixed image sizes": ["--input", str(training / "image_2"), "--intrinsics", "700,700,600,180"],
        "calib file not found": ["--input", str(training / "image_2"), "--calib", str(tmp_path / "nope.txt")],
        "exactly one of --calib": ["--input", str(training / "image_2")],
    }
    malformed = tmp_path / "bad_calib.txt"
    malformed.write_text("P2: 1 2 three\n")
    cases["bad_calib.txt:1: P2 needs 12 finite values"] = [
        "--input",
        str(training / "image_2"),
        "--calib",
        str(malformed),
    ]
    for message, argv in cases.items():
        code, _, stderr = run_infer(infer_tool, [*base, *argv], capsys)
        assert code == 2 and message in stderr and stderr.count("\n") == 1, (message, stderr)


def test_channels_last_backend_gives_the_same_outputs(checkpoint: Path, kitti_sample_dir: Path) -> None:
    """NHWC (bench_infer's channels_last row) picks the same peaks, outputs within float noise."""
    training = kitti_sample_dir / "training"
    frames = [
        Frame(
            name,
            cv2.imread(str(training / "image_2" / f"{name}.png"))[..., ::-1],
            read_calib(training / "calib" / f"{name}.txt").P2,
        )
        for name in ("000000", "000001")
    ]
    batch = make_batch(frames, resolution=RESOLUTION)
    detector = load_detector(load_config(CONFIG), checkpoint).detector
    cpu = torch.device("cpu")
    plain = TorchBackend(detector, topk=50, device=cpu)(batch.arrays)
    nhwc = TorchBackend(detector, topk=50, device=cpu, channels_last=True)(batch.arrays)
    for name in ("cls", "xs", "ys"):
        assert np.array_equal(plain[name], nhwc[name])
    for name, value in plain.items():
        np.testing.assert_allclose(nhwc[name], value, atol=1e-3, rtol=1e-4, err_msg=name)


def test_decoding_a_padded_frame_gives_boxes_in_its_own_pixels() -> None:
    """A 16:9 frame is padded at the sides; one peak decoded from made-up outputs lands where the
    frame's own camera projects it, and its 2D box is in the frame's pixels."""
    width, height = 640, 360
    P = intrinsics_projection(500.0, 500.0, 330.0, 170.0)
    frame = Frame("wide", np.zeros((height, width, 3), np.uint8), P)
    batch = make_batch([frame], resolution=RESOLUTION)
    (net,) = batch.inputs
    assert tuple(net.pad) == (220, 0) and np.allclose(net.coord_range, [[0, 0], [1080, 360]])
    hf, wf = RESOLUTION[1] // 4, RESOLUTION[0] // 4
    outputs = {
        "scores": np.array([[0.9]], np.float32), "cls": np.array([[1]]),  # Car
        "xs": np.array([[40]]), "ys": np.array([[20]]),
        "offset_2d": np.zeros((1, 2, hf, wf), np.float32),
        "size_2d": np.full((1, 2, hf, wf), 4.0, np.float32),
        "offset_3d": np.zeros((1, 1, 2), np.float32), "size_3d": np.zeros((1, 1, 3), np.float32),
        "heading": np.zeros((1, 1, 24), np.float32), "depth": np.array([[[20.0, 0.0]]], np.float32),
        "depth_confidence": np.ones((1, 1), np.float32),
    }  # fmt: skip
    (objects,) = decode_outputs(outputs, batch, model_type="did", threshold=0.1, backprojection="exact")
    (obj,) = objects
    centre = np.array([40 * 1080 / 96 - 220, 20 * 360 / 32])  # the peak cell in the frame's pixels
    np.testing.assert_allclose((obj.box2d[:2] + obj.box2d[2:]) / 2, centre, atol=1e-4)
    uv, depth = project_to_image((obj.pos - [0.0, obj.h / 2, 0.0])[None], P)  # the 3D centre
    np.testing.assert_allclose(uv[0], centre, atol=1e-4)
    assert depth[0] == pytest.approx(20.0)


def test_named_cameras_and_the_backend_chosen_by_the_file_suffix(infer_tool) -> None:
    kitti = parse_intrinsics("kitti")  # KITTI object P2 without its translation column
    assert kitti[0, 0] == kitti[1, 1] == 721.5377 and (kitti[0, 2], kitti[1, 2]) == (609.5593, 172.854)
    assert np.array_equal(parse_intrinsics(" KITTI "), kitti)
    assert parse_intrinsics("nuscenes")[0, 2] == pytest.approx(816.27, abs=0.01)
    with pytest.raises(CameraError, match="kitti, kitti360"):
        parse_intrinsics("kitty")
    base = ["--input", "x.png"]
    assert infer_tool.parse_args([*base, "--checkpoint", "model.onnx"]).backend == "onnx"
    assert infer_tool.parse_args([*base, "--checkpoint", "best.pth"]).backend == "torch"
    assert infer_tool.parse_args([*base, "--checkpoint", "m.onnx", "--backend", "torch"]).backend == "torch"
