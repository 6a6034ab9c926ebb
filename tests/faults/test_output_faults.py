"""Output faults: no tool replaces a user's run, checkpoint, dataset or input without being told;
being told (``--overwrite``) moves or replaces exactly what it says."""

from __future__ import annotations

from pathlib import Path

import torch
from faults_common import assert_kept, cli, cli_out, error_line, snapshot

from lib.models.checkpoint_io import load_checkpoint
from tools.evaluate import main as evaluate_main
from tools.export_student import main as export_main
from tools.make_synthetic_kitti import MARKER
from tools.make_synthetic_kitti import main as synth_main
from tools.reproduce import main as reproduce_main
from tools.train_val import main as train_main


def earlier_run(tmp_path: Path) -> Path:
    """A run folder holding an earlier run's files (the contents do not matter here)."""
    run_dir = tmp_path / "out" / "tiny"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"epoch": 4, "w": torch.ones(2)}, run_dir / "checkpoints" / "last.pth")
    torch.save({"epoch": 3, "w": torch.ones(2)}, run_dir / "checkpoints" / "best.pth")
    (run_dir / "config.yaml").write_text("experiment: {name: tiny}\n")
    (run_dir / "train.log").write_text("epoch 4\n")
    return run_dir


def test_new_run_refuses_a_folder_holding_checkpoints(config, tmp_path, capsys):
    run_dir = earlier_run(tmp_path)
    before = snapshot(run_dir)
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {run_dir}: holds the checkpoints of an earlier run (best.pth, last.pth); continue it "
        "with --resume, or start afresh with --overwrite (moves it to tiny.old-<time>)"
    )
    assert_kept(before, run_dir)
    assert snapshot(run_dir) == before  # not even a log line added


def test_overwrite_moves_the_old_run_aside_whole_then_trains(config, tmp_path, capsys):
    run_dir = earlier_run(tmp_path)
    before = snapshot(run_dir)
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out", "--overwrite"], capsys)
    assert code == 0, err
    (old,) = (tmp_path / "out").glob("tiny.old-*")
    assert snapshot(old) == before  # the earlier run, complete and unmixed
    assert load_checkpoint(run_dir / "checkpoints" / "last.pth")["epoch"] == 1
    assert not (run_dir / "checkpoints" / "best.pth").exists()
    assert f"moved the earlier run {run_dir} to {old}" in err
    # -e then records its config beside the training run's config.yaml, not over it
    trained_config = (run_dir / "config.yaml").read_text()
    code, err = cli(train_main, ["--config", config, "--output-dir", tmp_path / "out", "-e"], capsys)
    assert code == 0, err
    assert (run_dir / "config.yaml").read_text() == trained_config
    assert (run_dir / "test_config.yaml").is_file()


def test_overwrite_does_not_go_with_resume_or_eval(config, tmp_path, capsys):
    run_dir = earlier_run(tmp_path)
    before = snapshot(run_dir)
    for flag in ("--resume", "-e"):
        argv = ["--config", config, "--output-dir", tmp_path / "out", "--overwrite", flag]
        code, err = cli(train_main, argv, capsys)
        assert code == 2
        assert (
            error_line(err)
            == "error: --overwrite starts a new training run: it cannot go with --resume or -e"
        )
    assert snapshot(run_dir) == before


def export(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "last.pth"
    path.parent.mkdir()
    torch.save({"model_state": {"a.weight": torch.ones(2)}, "optimizer": {}, "epoch": 2}, path)
    return path


def test_export_refuses_to_write_onto_its_input(tmp_path, capsys):
    ckpt = export(tmp_path)
    before = snapshot(tmp_path)
    for out in (ckpt, tmp_path / "run" / ".." / "run" / "last.pth"):
        code, err = cli(export_main, ["--checkpoint", ckpt, "--out", out], capsys)
        assert code == 2
        assert f"--out is the input --checkpoint ({ckpt}); writing there could replace" in error_line(err)
    assert snapshot(tmp_path) == before


def test_export_refuses_its_input_through_a_link(tmp_path, capsys):
    ckpt = export(tmp_path)
    (tmp_path / "alias.pth").symlink_to(ckpt)
    before = snapshot(tmp_path)
    code, err = cli(export_main, ["--checkpoint", ckpt, "--out", tmp_path / "alias.pth"], capsys)
    assert code == 2 and "is the input --checkpoint" in err
    assert snapshot(tmp_path) == before


def test_export_replaces_an_existing_file_only_with_overwrite(tmp_path, capsys):
    ckpt = export(tmp_path)
    out = tmp_path / "student.pth"
    out.write_bytes(b"user file")
    code, err = cli(export_main, ["--checkpoint", ckpt, "--out", out], capsys)
    assert code == 2
    assert error_line(err) == f"error: {out}: exists; pass --overwrite to replace it"
    assert out.read_bytes() == b"user file"
    code, err = cli(export_main, ["--checkpoint", ckpt, "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert set(load_checkpoint(out)) == {"model_state", "epoch"}


def test_export_to_a_folder_or_from_a_missing_file(tmp_path, capsys):
    ckpt = export(tmp_path)
    code, err = cli(export_main, ["--checkpoint", ckpt, "--out", tmp_path], capsys)
    assert code == 2 and error_line(err) == f"error: {tmp_path}: is a folder; --out names the file to write"
    code, err = cli(export_main, ["--checkpoint", tmp_path / "no.pth", "--out", tmp_path / "s.pth"], capsys)
    assert code == 2 and error_line(err) == f"error: checkpoint not found: {tmp_path / 'no.pth'}"


def test_synthetic_generator_refuses_a_foreign_dataset(data, capsys):
    assert not (data / MARKER).exists()  # like a real KITTI copy (written by lib, not the tool)
    before = snapshot(data)
    code, err = cli(synth_main, ["--out", data, "--frames", "2", "--size", "64x32"], capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {data}: not empty and not written by this tool (no {MARKER}); "
        "its files would be overwritten: choose a new or empty folder"
    )
    assert snapshot(data) == before


def test_synthetic_generator_rewrites_its_own_output_when_told(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["--out", out, "--frames", "2", "--size", "64x32"]
    code, stdout, err = cli_out(synth_main, args, capsys)
    assert code == 0 and "wrote 2 synthetic frames" in stdout, err
    before = snapshot(out)
    code, err = cli(synth_main, [*args[:3], "3", *args[4:]], capsys)
    assert code == 2
    assert error_line(err) == f"error: {out}: holds an earlier synthetic set; pass --overwrite to rewrite it"
    assert snapshot(out) == before
    code, stdout, err = cli_out(synth_main, [*args[:3], "1", *args[4:], "--overwrite"], capsys)
    assert code == 0 and "wrote 1 synthetic frames" in stdout, err
    assert sorted(p.name for p in (out / "training" / "image_2").iterdir()) == ["000000.png"]
    assert len(list((out / "training" / "depth_dense").iterdir())) == 1  # no depth map of the old set


def test_synthetic_generator_refuses_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = cli(synth_main, ["--out", tmp_path / "file", "--frames", "1"], capsys)
    assert code == 2 and error_line(err) == f"error: {tmp_path / 'file'}: exists and is not a folder"
    assert (tmp_path / "file").read_text() == "x"


def eval_argv(data: Path, json: Path) -> list:
    """Evaluate the val labels against themselves as results (a score column added)."""
    labels = data / "training" / "label_2"
    results = data / "results"
    results.mkdir(exist_ok=True)
    for frame in ("000008", "000009"):
        lines = (labels / f"{frame}.txt").read_text().splitlines()
        (results / f"{frame}.txt").write_text("".join(f"{line} 0.9\n" for line in lines))
    split = data / "ImageSets" / "val.txt"
    return ["--label-dir", labels, "--result-dir", results, "--split", split, "--json", json]


def test_evaluate_json_may_not_replace_an_input(data, capsys):
    eval_argv(data, data / "x.json")  # writes the result files
    before = snapshot(data)
    for target, how in (
        (data / "ImageSets" / "val.txt", "is the input --split"),
        (data / "results" / "000008.txt", "lies inside the input --result-dir"),
    ):
        code, err = cli(evaluate_main, eval_argv(data, target), capsys)
        assert code == 2
        assert error_line(err).startswith(f"error: {target}: --json {how} (")  # lib/utils/outputs.py
    assert snapshot(data) == before


def test_evaluate_json_in_an_unwritable_place_is_one_line(data, tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file, not a folder")
    code, err = cli(evaluate_main, eval_argv(data, tmp_path / "blocker" / "ap.json"), capsys)
    assert code == 2
    assert error_line(err).startswith(f"error: {tmp_path / 'blocker'}")


def test_reproduce_refuses_to_retrain_over_a_finished_stage(tmp_path, capsys):
    teacher = tmp_path / "demo" / "teacher" / "checkpoints"
    teacher.mkdir(parents=True)
    (teacher / "last.pth").write_bytes(b"weights")
    before = snapshot(tmp_path)
    code, err = cli(reproduce_main, ["--demo", "--output-dir", tmp_path / "demo"], capsys)
    assert code == 2
    assert error_line(err) == (
        f"error: {tmp_path / 'demo' / 'teacher'}: holds the checkpoints of an earlier run; pass --skip-done "
        "to reuse finished stages, or choose another --output-dir"
    )
    assert snapshot(tmp_path) == before
