"""Right error, right words: every user-input failure is one ``error:`` line (exit status 2)
naming the file or key and the true cause: text that is not UTF-8, a device that is not there,
a bad list element of an override, a file that is no PyTorch checkpoint, a full disk, a folder
given as an output or as the checkpoint, weights full of NaN (for every reader and exporter), a
negative focal length, a JPEG cut short."""

from __future__ import annotations

import errno
import os
import pickle
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from faults_common import cli, detector_checkpoint, error_line

from lib.inference_io import jpeg_truncated
from tools.evaluate import main as evaluate_main
from tools.export_onnx import main as onnx_main
from tools.export_student import main as export_main
from tools.infer import main as infer_main
from tools.make_submission import main as submit_main
from tools.train_val import main as train_main


def evaluate_argv(data: Path, results: Path) -> list:
    split = data / "ImageSets" / "val.txt"
    return ["--label-dir", data / "training" / "label_2", "--result-dir", results, "--split", split]


def results_of(data: Path, tmp_path: Path) -> Path:
    """The val labels as results (score 0.9)."""
    folder = tmp_path / "results"
    folder.mkdir()
    for frame in ("000008", "000009"):
        lines = (data / "training" / "label_2" / f"{frame}.txt").read_text().splitlines()
        (folder / f"{frame}.txt").write_text("".join(f"{line} 0.9\n" for line in lines))
    return folder


def test_result_file_that_is_not_utf8(data, tmp_path, capsys):
    results = results_of(data, tmp_path)
    (results / "000009.txt").write_bytes(b"Car \xff\xfe 0.9\n")
    code, err = cli(evaluate_main, evaluate_argv(data, results), capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {results / '000009.txt'}: not a text file: byte 0xff at offset 4 is not UTF-8 "
        "(KITTI files are plain ASCII text)"
    )
    code, err = cli(
        submit_main, [results, "--split", data / "ImageSets" / "val.txt", "--out", tmp_path / "s.zip"], capsys
    )
    assert code == 2 and f"{results / '000009.txt'}: not a text file" in error_line(err)


def test_split_file_that_is_not_utf8(config, data, tmp_path, capsys):
    (data / "ImageSets" / "train.txt").write_bytes(b"000000\n\x80\x81\n")
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert f"{data / 'ImageSets' / 'train.txt'}: not a text file: byte 0x80 at offset 7" in error_line(err)


INFER_CAMERA = ["--intrinsics", "100,100,64,24", "--no-render"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_requested_without_a_gpu(tmp_path, capsys):
    argv = ["--checkpoint", tmp_path / "m.pth", "--input", tmp_path, *INFER_CAMERA, "--device", "cuda"]
    code, err = cli(infer_main, argv, capsys)
    assert code == 2
    assert (
        error_line(err) == "error: --device cuda: no CUDA GPU is available here; use --device cpu (or auto)"
    )


def test_unknown_device_name(tmp_path, capsys):
    argv = ["--checkpoint", tmp_path / "m.pth", "--input", tmp_path, *INFER_CAMERA, "--device", "gpu0"]
    code, err = cli(infer_main, argv, capsys)
    assert code == 2
    assert error_line(err) == "error: --device: unknown device 'gpu0' (auto, cpu, cuda, cuda:1, ...)"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.writelist=[Car,1]", "'dataset.writelist'[1]: expected str, got int (1)"),
        ("dataset.resolution=[128.5,64]", "'dataset.resolution'[0]: expected int, got float (128.5)"),
        ("lr_scheduler.decay_list=[5,x]", "'lr_scheduler.decay_list'[1]: expected int, got str ('x')"),
    ],
)
def test_bad_list_element_blames_the_override(config, tmp_path, capsys, override, message):
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out", override], capsys)
    assert code == 2
    assert error_line(err) == f"error: override {override!r}: {message}"


def eval_with(config: Path, tmp_path: Path, checkpoint: Path, capsys) -> tuple[int, str]:
    argv = ["--config", config, "--output-dir", tmp_path / "out", "-e", f"tester.checkpoint={checkpoint}"]
    return cli(train_main, argv, capsys)


def test_a_random_pickle_is_not_called_python_objects(config, tmp_path, capsys):
    path = tmp_path / "model.pth"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    code, err = eval_with(config, tmp_path, path, capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {path}: not a PyTorch checkpoint (a plain Python pickle, not written by torch.save: "
        "a checkpoint is a zip archive of tensors)"
    )


def test_a_checkpoint_cut_short(config, tmp_path, capsys):
    path = tmp_path / "last.pth"
    torch.save({"model_state": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:1500])
    code, err = eval_with(config, tmp_path, path, capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {path}: not a PyTorch checkpoint "
        "(a zip archive cut short, e.g. by an interrupted download or copy)"
    )


def test_weights_full_of_nan_are_named_as_the_cause(config, tmp_path, capsys):
    path = detector_checkpoint(tmp_path / "diverged.pth", config)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_state"] = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in ckpt["model_state"].items()
    }
    torch.save(ckpt, path)
    code, err = eval_with(config, tmp_path, path, capsys)
    assert code == 2
    line = error_line(err)
    assert (
        line.startswith(f"error: {path}: ") and "weight tensors hold NaN or infinite values (first: " in line
    )
    assert line.endswith("the training that wrote it had diverged: use an earlier checkpoint")


def test_every_exporter_refuses_weights_full_of_nan(config, tmp_path, capsys):
    """export_student and export_onnx name the file and the tensors as infer and -e do
    (lib/models/checkpoint_io.py ``check_finite_state``) and write nothing."""
    folder = tmp_path / "w"
    folder.mkdir()
    path = folder / "diverged.pth"
    state = {"mean_size": torch.ones(1, 3), "a.weight": torch.full((2,), float("nan"))}
    state |= {f"{k}.weight": torch.tensor([1.0, float("inf")]) for k in "bcd"}
    torch.save({"model_state": state, "epoch": 7}, path)
    expected = (
        f"error: {path}: 4 of its 5 weight tensors hold NaN or infinite values "
        "(first: a.weight, b.weight, c.weight, ...); the training that wrote it had diverged: "
        "use an earlier checkpoint"
    )
    code, err = cli(export_main, ["--checkpoint", path, "--out", folder / "s.pth"], capsys)
    assert code == 2 and error_line(err) == expected
    code, err = cli(onnx_main, ["--config", config, "--checkpoint", path, "--out", folder / "m.onnx"], capsys)
    assert code == 2 and error_line(err) == expected
    assert [p.name for p in folder.iterdir()] == ["diverged.pth"]


def test_a_run_folder_given_as_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (tmp_path / "frames").mkdir()
    argv = ["--input", tmp_path / "frames", *INFER_CAMERA, "--out", tmp_path / "o", "--device", "cpu"]
    code, err = cli(infer_main, ["--checkpoint", run / "checkpoints", *argv], capsys)
    assert code == 2
    assert (
        error_line(err)
        == f"error: {run / 'checkpoints'}: is a folder, not a checkpoint file; give the .pth file"
    )
    (run / "checkpoints" / "last.pth").write_bytes(b"weights")
    for folder in (run, run / "checkpoints"):
        code, err = cli(infer_main, ["--checkpoint", folder, *argv], capsys)
        assert code == 2
        assert error_line(err) == (
            f"error: {folder}: is a folder, not a checkpoint file; "
            f"did you mean {run / 'checkpoints' / 'last.pth'}?"
        )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("form", [["--intrinsics", "-700,-700,600,170"], ["--intrinsics=-700,-700,600,170"]])
def test_a_negative_focal_length_is_named_in_both_spellings(tmp_path, capsys, form):
    (tmp_path / "frames").mkdir()
    argv = [
        "--checkpoint",
        tmp_path / "m.pth",
        "--input",
        tmp_path / "frames",
        *form,
        "--out",
        tmp_path / "o",
    ]
    code, err = cli(infer_main, [*argv, "--device", "cpu"], capsys)
    assert code == 2
    assert error_line(err) == (
        "error: --intrinsics -700,-700,600,170: focal lengths must be positive, "
        "got fx = -700 px, fy = -700 px"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device that is always full)")
def test_full_disk_names_the_json_being_written(data, tmp_path, capsys):
    argv = [*evaluate_argv(data, results_of(data, tmp_path)), "--json", "/dev/full"]
    code, err = cli(evaluate_main, argv, capsys)
    assert code == 2
    assert error_line(err) == "error: /dev/full: No space left on device"


def test_full_disk_while_zipping_names_the_zip_and_leaves_no_part(data, tmp_path, capsys, monkeypatch):
    results = results_of(data, tmp_path)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(zipfile.ZipFile, "write", full)
    out = tmp_path / "sub.zip"
    code, err = cli(submit_main, [results, "--split", data / "ImageSets" / "val.txt", "--out", out], capsys)
    assert code == 2
    assert error_line(err) == f"error: {out}: No space left on device"
    assert not list(tmp_path.glob("sub.zip*"))


def test_full_disk_while_recording_the_config_names_config_yaml(config, tmp_path, capsys, monkeypatch):
    import yaml

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(yaml, "safe_dump", full)
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert error_line(err) == f"error: {tmp_path / 'out' / 'tiny' / 'config.yaml'}: No space left on device"


def test_folder_given_as_an_output_file(data, tmp_path, capsys):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"weights")
    code, err = cli(onnx_main, ["--checkpoint", ckpt, "--out", tmp_path, "--force"], capsys)
    assert code == 2
    assert error_line(err) == f"error: {tmp_path}: is a folder; --out names the .onnx file to write"
    folder = tmp_path / "ap"
    folder.mkdir()
    code, err = cli(
        evaluate_main, [*evaluate_argv(data, results_of(data, tmp_path)), "--json", folder], capsys
    )
    assert code == 2
    assert error_line(err) == f"error: {folder}: Is a directory"


def test_half_a_jpeg_is_refused_not_decoded_grey(config, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 128, 3), 120, np.uint8))
    (frames / "a.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    ckpt = detector_checkpoint(tmp_path / "m.pth", config)
    argv = [
        "--checkpoint",
        ckpt,
        "--input",
        frames,
        *INFER_CAMERA,
        "--out",
        tmp_path / "o",
        "--device",
        "cpu",
    ]
    code, err = cli(infer_main, argv, capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {frames / 'a.jpg'}: truncated JPEG "
        "(the file ends before its end-of-image marker); re-copy it"
    )


def test_a_whole_jpeg_with_a_trailer_is_not_truncated():
    ok, jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), 50, np.uint8))
    data = jpeg.tobytes()
    assert not jpeg_truncated(data) and not jpeg_truncated(data + b"camera maker's trailer")
    assert jpeg_truncated(data[:-2]) and jpeg_truncated(data[: len(data) // 3])
