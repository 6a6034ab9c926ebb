"""Values out of range: every numeric flag says its range and the value (argparse's usage line,
exit status 2, before any work), and a camera that cannot belong to the image is refused naming
the flag or file, the values and the image size (lib/inference_io.py ``check_camera``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from faults_common import cli, detector_checkpoint, error_line

from lib.inference import CameraError, intrinsics_projection
from lib.inference_io import Camera, check_camera
from tools.check_dataset import main as check_main
from tools.export_onnx import main as onnx_main
from tools.infer import main as infer_main
from tools.make_synthetic_kitti import main as synth_main
from tools.reproduce import main as reproduce_main
from tools.sanity_check import main as sanity_main
from tools.visualize import main as visualize_main

INFER = "--checkpoint m.pth --input x.png --intrinsics 700,700,600,180"
ONNX = "--checkpoint m.pth --out m.onnx"
VIS = "--data-dir d --frame 1"
TOOLS = {
    "infer": infer_main,
    "onnx": onnx_main,
    "visualize": visualize_main,
    "check": check_main,
    "synth": synth_main,
    "sanity": sanity_main,
    "reproduce": reproduce_main,
}
CASES = [  # tool, command line, what argparse prints after "error: "
    ("infer", f"{INFER} --score-threshold 50", "argument --score-threshold: must be in [0, 1], got 50"),
    ("infer", f"{INFER} --score-threshold nan", "argument --score-threshold: must be a finite number"),
    ("infer", f"{INFER} --score-threshold -0.1", "argument --score-threshold: must be in [0, 1]"),
    ("infer", f"{INFER} --width 0", "argument --width: must be an integer >= 1, got 0"),
    ("infer", f"{INFER} --width 99999", "argument --width: must be at most 16384 pixels"),
    ("infer", f"{INFER} --batch-size 0", "argument --batch-size: must be an integer >= 1, got 0"),
    ("onnx", f"{ONNX} --topk 0", "argument --topk: must be an integer >= 1, got 0"),
    ("onnx", f"{ONNX} --topk -5", "argument --topk: must be an integer >= 1, got -5"),
    ("onnx", f"{ONNX} --topk 2.5", "argument --topk: expected an integer, got '2.5'"),
    ("visualize", f"{VIS} --width 0", "argument --width: must be an integer >= 1"),
    ("visualize", f"{VIS} --score-threshold inf", "argument --score-threshold: must be a finite number"),
    ("visualize", f"{VIS} --depth-min 50 --depth-max 10", "--depth-min 50 must be below --depth-max 10"),
    ("visualize", f"{VIS} --num-bins 0", "argument --num-bins: must be an integer >= 1"),
    ("check", "--data-dir d --workers 0", "argument --workers: must be an integer >= 1, got 0"),
    ("synth", "--out o --frames 2 --seed -1", "argument --seed: must be an integer >= 0, got -1"),
    ("sanity", "--config c.yaml --min-recall 1.5", "argument --min-recall: must be in [0, 1], got 1.5"),
    ("reproduce", "--demo --frames 0", "argument --frames: must be an integer >= 1, got 0"),
    (
        "reproduce",
        "--all --gpus 2 --master-port 70000 --dry-run",
        "argument --master-port: must be a TCP port in [1, 65535], got 70000",
    ),
]


@pytest.mark.parametrize(("tool", "command", "message"), CASES)
def test_numeric_flag_out_of_range(tool, command, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TOOLS[tool](command.split())
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err and "Traceback" not in err


OUTSIDE = "px lies outside the 1242x375 image"
FOCAL = "px is implausible for a 1242 px wide image (expected 124.2 to 12420 px"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((721.5, 721.5, 172.9, 609.6), f"principal point (cx, cy) = (172.9, 609.6) {OUTSIDE}"),
        ((721.5, 721.5, -5.0, 180.0), f"principal point (cx, cy) = (-5, 180) {OUTSIDE}"),
        ((7.215, 7.215, 609.6, 172.9), f"focal length fx = 7.215 {FOCAL}"),
        ((721.5, 72150.0, 609.6, 172.9), f"focal length fy = 72150 {FOCAL}"),
    ],
)
def test_camera_that_cannot_belong_to_the_image(values, message):
    with pytest.raises(CameraError) as err:
        check_camera(intrinsics_projection(*values), (1242, 375), "--intrinsics")
    assert str(err.value).startswith(f"--intrinsics: {message}")


def test_kitti_camera_and_a_phone_camera_pass():
    check_camera(intrinsics_projection(721.5377, 721.5377, 609.5593, 172.854), (1242, 375), "kitti")
    check_camera(intrinsics_projection(1500.0, 1500.0, 960.0, 540.0), (1920, 1080), "phone")


def test_calib_file_of_another_image_size_is_named(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    P = intrinsics_projection(721.5, 721.5, 609.6, 172.9)
    (calib / "small.txt").write_text("P2: " + " ".join(repr(float(v)) for v in P.ravel()) + "\n")
    camera = Camera.from_options(calib, None)
    with pytest.raises(CameraError, match=r"small.txt: principal point .* outside the 320x96 image"):
        camera.projection("small", (320, 96))
    assert np.array_equal(camera.projection("small", (1242, 375)), P)


def test_infer_with_intrinsics_in_the_wrong_order_names_the_flag(config, tmp_path, capsys):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((375, 1242, 3), np.uint8))
    ckpt = detector_checkpoint(tmp_path / "m.pth", config)
    argv = ["--checkpoint", ckpt, "--input", image, "--intrinsics", "721.5,721.5,172.9,609.6"]
    code, err = cli(infer_main, [*argv, "--out", tmp_path / "o", "--device", "cpu"], capsys)
    assert code == 2
    assert error_line(err) == (
        "error: --intrinsics: principal point (cx, cy) = (172.9, 609.6) px lies outside the 1242x375 image "
        "(intrinsics are fx,fy,cx,cy in pixels of this image)"
    )
