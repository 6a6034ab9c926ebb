"""tools/reproduce.py --demo --all end to end at a toy size (CPU): the synthetic set, its depth
maps, the six stages chained by checkpoint (teacher -> student -> MonoMMKD, its control, MonoSKD,
MonoDistill), two at a time (``--jobs 2``), their evaluations and the printed table;
``--skip-done``, ``--seeds``, ``--jobs`` and a bad override."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.config import Config, load_config, save_config
from lib.eval.kitti_format import latest_result_dir
from lib.utils.jobs import CommandError

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ("teacher", "student", "monommkd", "control", "monoskd", "monodistill")  # --demo --all
# A low lr: two steps at the demo's 3e-3 from scratch can overflow the exp(-o) depth of every peak
# (non-finite boxes are dropped), which would leave a stage without a Car to score.
TOY = [
    "trainer.max_epoch=1",
    "trainer.max_iters_per_epoch=2",
    "dataset.resolution=[128,64]",
    "optimizer.lr=0.0001",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
ROW = re.compile(r"^\| (\w+) \|((?: [0-9]+\.[0-9]{2} \|)+)$")


def reproduce(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "tools/reproduce.py", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def demo_run(module_tmp) -> tuple[Path, subprocess.CompletedProcess]:
    out = module_tmp / "demo"
    return out, reproduce("--demo", "--all", "--jobs", "2", "--frames", "6", "--output-dir", str(out), *TOY)


def table_rows(text: str) -> list[tuple[str, list[float]]]:
    rows = []
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match.group(1), [float(v) for v in match.group(2).split("|") if v.strip()]))
    return rows


def fake_stage(cmd: list[str]) -> tuple[Path, Path, Config]:
    """What a train_val command of reproduce.py asks for: its config file, output folder and the
    resolved config (its overrides, ``-e`` left out)."""
    config, out = Path(cmd[cmd.index("--config") + 1]), Path(cmd[cmd.index("--output-dir") + 1])
    overrides = [a for a in cmd[cmd.index("--output-dir") + 2 :] if a != "-e"]
    return config, out, load_config(config, overrides)


def write_fake_evaluation(out: Path, cfg: Config, ap: dict, errors: dict | None = None) -> None:
    """The files a ``-e`` run leaves for reproduce.py's tables: config.yaml, ap.json (Car 3D and
    BEV = ``ap``) and, when given, error_analysis.json."""
    run_dir = out / cfg.experiment.name
    save_config(cfg, run_dir / "config.yaml")
    results = run_dir / "results" / cfg.tester.split
    results.mkdir(parents=True)
    (results / "ap.json").write_text(json.dumps({"ap40": {"ap": {"Car": {"3d": ap, "bev": ap}}}}))
    if errors is not None:
        (results / "error_analysis.json").write_text(json.dumps(errors))


def test_demo_all_chains_every_stage_and_writes_the_table(demo_run):
    out, result = demo_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in (out / "data" / "training").iterdir()) == [
        "calib",
        "depth_dense",
        "image_2",
        "label_2",
        "velodyne",
    ]
    for stage in STAGES:  # --jobs 2: two at a time, each stage's console output in its log
        assert (out / stage / "checkpoints" / "last.pth").is_file(), stage
        assert (latest_result_dir(out / stage, "val") / "ap.json").is_file(), stage
        assert "KITTI evaluation of val" in (out / f"{stage}.log").read_text(), stage
    for stage in ("monommkd", "control", "monoskd", "monodistill"):
        distill = load_config(out / stage / "config.yaml").distill
        assert distill.teacher_checkpoint == str(out / "teacher" / "checkpoints" / "last.pth")
        assert distill.student_checkpoint == str(out / "student" / "checkpoints" / "last.pth")
    table = (out / "table.md").read_text()
    assert table in result.stdout
    assert "IoU 0.7 (KITTI protocol; last epoch)" in table and "loose overlaps" in table
    assert load_config(out / "control" / "config.yaml").distill.dualkl.weight == 0.0
    assert "| control: student + MonoMMKD's steps, DualKL weight 0 |" in table
    report = (out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert all((out / link).is_file() for link in links)
    for stage in STAGES:  # the pictures of each stage's -e evaluation (results/val/<checkpoint>-<sha>/)
        for picture in ("pr_Car.png", "errors_Car.png"):
            assert any(link.startswith(f"{stage}/results/val/") and link.endswith(picture) for link in links)
    table, errors = table.split("**Car errors on val")
    error_rows = [
        line.split("|")[2:-1] for line in errors.splitlines() if line.startswith("| ") and "model" not in line
    ]
    assert len(error_rows) == len(STAGES)  # recall 2D / 3D 0.5 / 3D 0.7, depth median / p90 / bias, heading
    assert all(re.fullmatch(r" (-?[0-9]+\.[0-9]{2}|-) ", c) for cells in error_rows for c in cells)
    assert all(len(cells) == 7 and cells[0] != " - " for cells in error_rows)  # recall is always there
    rows = table_rows(table)
    # the paper's table (3D + BEV: 6 cells) then the loose one (2D + BEV + 3D: 9 cells), every stage
    # (the control's row is labelled in words, which ROW leaves out)
    named = [s for s in STAGES if s != "control"]
    assert [(name, len(cells)) for name, cells in rows] == [(s, 6) for s in named] + [(s, 9) for s in named]
    assert all(0.0 <= v <= 100.0 for _, cells in rows for v in cells)


def test_skip_done_reuses_every_stage(demo_run):
    out, first = demo_run
    assert first.returncode == 0
    before = {s: (out / s / "checkpoints" / "last.pth").stat().st_mtime_ns for s in STAGES}
    again = reproduce("--demo", "--all", "--skip-done", "--output-dir", str(out), *TOY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done already") == len(STAGES)
    assert {s: (out / s / "checkpoints" / "last.pth").stat().st_mtime_ns for s in STAGES} == before
    assert (out / "table.md").read_text() in again.stdout


def test_bad_override_fails_before_training(tmp_path):
    result = reproduce(
        "--demo", "--frames", "2", "--output-dir", str(tmp_path / "demo"), "trainer.max_epok=1"
    )
    assert result.returncode == 2
    assert "max_epok" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "demo").exists()  # checked before the data is written


def test_table_cells_give_mean_and_sample_std_over_seeds():
    from lib.eval.report import format_results_table, table_cell

    assert table_cell([12.5]) == "12.50"
    assert table_cell([40.0, 44.0]) == "42.00 ± 2.83"  # std with n - 1: sqrt((4 + 4) / 1)
    assert table_cell([1.0, 2.0, 6.0]) == "3.00 ± 2.65"  # sqrt((4 + 1 + 9) / 2)
    assert table_cell([1.0, None]) == "-"

    def reports(ap_3d: float) -> dict:
        values = {"easy": ap_3d, "moderate": ap_3d / 2, "hard": 0.0}
        return {"ap40": {"ap": {"Car": {"3d": values, "bev": None}}}}

    table = format_results_table(
        {"teacher": [reports(40.0), reports(44.0)]}, title="T", metrics=("3d", "bev")
    )
    assert "| teacher | 42.00 ± 2.83 | 21.00 ± 1.41 | 0.00 ± 0.00 | - | - | - |" in table


def test_seeds_repeat_each_chain_with_its_own_seed(tmp_path, monkeypatch):
    """--seeds 3 with the stage subprocesses replaced by a fake train_val whose AP is the seed
    offset: every chain has its folder and seed, and the table holds the hand-computed spread."""
    import tools.reproduce as reproduce_cli

    calls, evaluated = [], []

    def fake_train_val(cmd: list[str]) -> None:
        config, out, cfg = fake_stage(cmd)
        calls.append((config.stem, out, cfg.experiment.seed, "-e" in cmd))
        if "-e" in cmd:
            evaluated.append(cfg.tester.checkpoint)
            offset = cfg.experiment.seed - 100  # the base seed given below
            ap = {"easy": 10.0 * offset, "moderate": 20.0 + offset, "hard": 5.0}
            recall = {"2d@0.5": 1.0, "3d@0.5": 0.8, "3d@0.7": 0.5 + 0.1 * offset}
            errors = {
                "classes": {"Car": {"all": {"recall": recall, "depth_abs_m": {"median": 0.2 * (offset + 1)}}}}
            }
            write_fake_evaluation(out, cfg, ap, errors)

    monkeypatch.setattr(reproduce_cli, "run_command", fake_train_val)
    out = tmp_path / "kitti"
    assert reproduce_cli.main(["--seeds", "3", "--output-dir", str(out), "experiment.seed=100"]) == 0
    stages = ("teacher", "student", "monommkd")
    trained = [(stem, run_out, seed) for stem, run_out, seed, evaluation in calls if not evaluation]
    # every chain's teacher and student first, then the distillation stages, which read both
    first = [(s, out / f"seed_{k}", 100 + k) for k in range(3) for s in stages[:2]]
    assert trained == first + [("monommkd", out / f"seed_{k}", 100 + k) for k in range(3)]
    distill = load_config(out / "seed_2" / "monommkd" / "config.yaml").distill
    assert distill.teacher_checkpoint == str(out / "seed_2" / "teacher" / "checkpoints" / "best.pth")
    table = (out / "table.md").read_text()
    assert "mean ± std over 3 seeds" in table
    # offsets 0, 1, 2: easy 0/10/20 -> 10.00 ± 10.00, moderate 20/21/22 -> 21.00 ± 1.00, hard 5.00 ± 0.00
    cells = " 10.00 ± 10.00 | 21.00 ± 1.00 | 5.00 ± 0.00 |"
    assert all(f"| {s} |{cells}{cells}" in table for s in stages)
    # errors: recall 1, 0.8, 0.5/0.6/0.7; depth median 0.2/0.4/0.6; the other columns absent
    errors = "| 1.00 ± 0.00 | 0.80 ± 0.00 | 0.60 ± 0.10 | 0.40 ± 0.20 | - | - | - |"
    assert all(f"| {s} {errors}" in table for s in stages)
    # each seed's row, and the range: easy 0-20, moderate 20-22, hard 5-5
    assert "| student seed 1 | 10.00 | 21.00 | 5.00 | 10.00 | 21.00 | 5.00 |" in table
    ranges = " 0.00–20.00 | 20.00–22.00 | 5.00–5.00 |"
    assert all(f"| {s} min–max |{ranges}{ranges}" in table for s in stages)
    assert "last epoch" in table  # each stage's last.pth was evaluated, not a best epoch chosen on val
    assert evaluated == [str(folder / "last.pth") for folder in evaluated_runs(out, stages)]
    report = (out / "report.md").read_text()
    assert "![seed spread](seed_spread.png)" in report and (out / "seed_spread.png").is_file()

    evaluated.clear()
    best = tmp_path / "best"
    assert reproduce_cli.main(["--seeds", "2", "--best-epoch", "--output-dir", str(best)]) == 0
    assert evaluated == [None] * 6  # train_val's default: best.pth when the run has one
    assert "best epoch on val, optimistic" in (best / "table.md").read_text()


def evaluated_runs(out: Path, stages: tuple[str, ...]) -> list[Path]:
    """The checkpoints folder of each run of ``--seeds 3``, in the order reproduce evaluates them."""
    first = [out / f"seed_{k}" / s / "checkpoints" for k in range(3) for s in stages[:2]]
    return first + [out / f"seed_{k}" / "monommkd" / "checkpoints" for k in range(3)]


def test_jobs_train_teacher_and_student_side_by_side_then_distil(tmp_path, monkeypatch):
    """--jobs 2 with a fake train_val: the teacher's and the student's training must overlap (each
    waits at a barrier for the other, which fails when run one after the other), each gets one of
    two cores and its own log; MonoMMKD starts only after both and runs alone on the console."""
    import threading

    import tools.reproduce as reproduce_cli

    barrier = threading.Barrier(2, timeout=20)
    lock = threading.Lock()
    calls = []

    def fake_train_val(cmd: list[str], *, log: Path | None = None, threads: int | None = None) -> None:
        config = Path(cmd[cmd.index("--config") + 1])
        if config.stem != "monommkd" and "-e" not in cmd:
            barrier.wait()  # BrokenBarrierError unless the other first-wave stage trains meanwhile
        with lock:
            calls.append((config.stem, "-e" in cmd, log, threads))
        if "-e" in cmd:
            _, out, cfg = fake_stage(cmd)
            write_fake_evaluation(out, cfg, {"easy": 1.0, "moderate": 2.0, "hard": 3.0})

    monkeypatch.setattr(reproduce_cli, "run_command", fake_train_val)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    out = tmp_path / "kitti"
    assert reproduce_cli.main(["--jobs", "2", "--output-dir", str(out)]) == 0
    assert len(calls) == 6
    first, last = calls[:4], calls[4:]
    assert sorted(first, key=str) == sorted(
        [(s, e, out / f"{s}.log", 1) for s in ("teacher", "student") for e in (False, True)], key=str
    )
    assert last == [("monommkd", False, None, None), ("monommkd", True, None, None)]


def test_jobs_stop_starting_stages_after_a_failure(tmp_path, monkeypatch):
    """--jobs 2 --seeds 2: chain 0's teacher fails at once; chain 0's student, already running,
    finishes; the two stages of chain 1 never start, nor does any distillation; the teacher's
    CommandError (naming its log) is what the run ends with."""
    import threading

    import tools.reproduce as reproduce_cli

    started = []
    lock = threading.Lock()
    student_running = threading.Event()

    def fake_train_val(cmd: list[str], *, log: Path | None = None, threads: int | None = None) -> None:
        out = Path(cmd[cmd.index("--output-dir") + 1])
        stage = Path(cmd[cmd.index("--config") + 1]).stem
        with lock:
            started.append((out.name, stage, "-e" in cmd))
        if stage == "teacher" and out.name == "seed_0":
            assert student_running.wait(timeout=20)  # fail while the student trains beside it
            raise CommandError(f"command failed with exit code 1 (its output: {log})")
        if stage == "student" and out.name == "seed_0" and "-e" not in cmd:
            student_running.set()
            time.sleep(0.5)  # still training when the teacher fails
            return
        if "-e" in cmd:  # the student's evaluation: nothing to write, the run stops before the table
            return
        raise AssertionError(f"{stage} of {out.name} started after the failure")

    monkeypatch.setattr(reproduce_cli, "run_command", fake_train_val)
    out = tmp_path / "kitti"
    with pytest.raises(CommandError, match=r"teacher\.log"):
        reproduce_cli.main(["--jobs", "2", "--seeds", "2", "--output-dir", str(out)])
    assert sorted(started) == [
        ("seed_0", "student", False),
        ("seed_0", "student", True),
        ("seed_0", "teacher", False),
    ]


def test_gpus_dry_run_prints_a_torchrun_command_per_stage(tmp_path):
    """--gpus N --dry-run: each stage's training under torchrun (multi-machine options passed
    through), its evaluation as one process; nothing is written. A global batch that does not
    split over the processes is refused before anything runs; --help gives the stage costs."""
    out = tmp_path / "kitti"
    machines = ["--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1"]
    result = reproduce("--gpus", "2", "--dry-run", "--all", "--output-dir", str(out), *machines)
    assert result.returncode == 0, result.stderr
    lines = [line[2:] for line in result.stdout.splitlines() if line.startswith("$ ")]
    torchrun = f"{sys.executable} -m torch.distributed.run --nproc_per_node=2 --nnodes=2 --node_rank=1 "
    torchrun += "--master_addr=10.0.0.1 --master_port=29500 tools/train_val.py --config "
    stages = ("teacher", "student", "monommkd", "monoskd", "monodistill")
    configs = [Path(line.split(" --config ")[1].split()[0]) for line in lines[::2]]
    assert [(c.parent.name, c.name) for c in configs] == [("configs", f"{s}.yaml") for s in stages]
    assert all(line.startswith(torchrun) for line in lines[::2])
    assert all(
        line.startswith(f"{sys.executable} tools/train_val.py") and " -e " in line for line in lines[1::2]
    )
    assert not out.exists()
    bad = reproduce("--gpus", "3", "--dry-run", "--output-dir", str(out))
    assert (
        bad.returncode == 2 and "dataset.batch_size 16 (the global batch) does not split over 3" in bad.stderr
    )
    assert "GPU-hours" in reproduce("--help").stdout
