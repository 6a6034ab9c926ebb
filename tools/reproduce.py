"""Reproduce the paper's comparison: teacher → student → MonoMMKD (→ MonoSKD, MonoDistill).

    python tools/reproduce.py                   # KITTI: configs/{teacher,student,monommkd}.yaml
    python tools/reproduce.py --all             # + configs/monoskd.yaml, configs/monodistill.yaml
    python tools/reproduce.py --demo            # synthetic data, configs/demo/*.yaml, CPU, minutes

Each stage is one ``tools/train_val.py`` run in a subprocess (its progress bars show), followed by
``tools/train_val.py -e`` on the stage's last checkpoint. The distillation stages get the
teacher's and the student's checkpoints of the same output folder (docs/method.md, 'Framework'). The table of
Car 3D and BEV AP40 (Easy / Mod / Hard) per model, and one of the Car errors (recall at 2D / 3D
IoU, depth and heading errors: lib/eval/error_analysis.py), are printed and written to
``<output-dir>/table.md``, and ``<output-dir>/report.md`` shows the tables with every stage's
precision-recall curves and error plots (its result folder's report.md, lib/eval/report.py). Each
stage is evaluated at its LAST epoch: choosing the best epoch on the val frames that are then
reported is optimistic; ``--best-epoch`` evaluates the best.pth of runs that evaluated during
training instead, and the tables say so. ``--demo`` first writes the synthetic KITTI-format set
(tools/make_synthetic_kitti.py) and its depth maps (tools/make_depth_maps.py) into
``<output-dir>/data``, and additionally reports AP40 at the loose overlaps (0.5 for Car), which
a few CPU epochs reach more easily than 0.7, and adds the control stage (configs/demo/control.yaml:
MonoMMKD's steps from the same student with the DualKL weight at 0), so that MonoMMKD is compared
with the same compute.

``--jobs N`` trains up to N independent stages at once (the teacher and the student of every
chain, then the distillation stages), each with ``OMP_NUM_THREADS`` = CPU cores / N unless set,
its console output in ``<output-dir>/<stage>.log``: on a 2-core CPU two one-thread trainings side
by side do more steps per second than one two-thread training (BENCHMARKS.md, '2026-12-01 (b):
side-by-side training').

``--seeds N`` repeats the whole chain N times with the training seeds (``experiment.seed``) of
each stage's config + 0, 1, ..., N - 1, chain k in ``<output-dir>/seed_<k>/`` (the distillation
stages of chain k use chain k's teacher and student; the demo's synthetic set is shared), and the
tables give each model's row per seed, then each cell as mean ± sample standard deviation and
min–max over the N runs, and ``<output-dir>/seed_spread.png`` plots the Car 3D Mod AP40 of every
run: how much of a difference between two rows is run-to-run noise (tools/compare_runs.py marks it).

``--gpus N`` trains every stage with ``torchrun`` on N GPUs of this machine (``--nnodes``,
``--node-rank``, ``--master-addr``, ``--master-port`` are passed through for several machines:
start the same command on each, with its ``--node-rank``). ``dataset.batch_size`` stays the
global batch (the reference's 16, split over the processes); each ``-e`` runs as one process.
``--dry-run`` prints every command (data, each stage's training and evaluation) and runs none.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from functools import partial
from pathlib import Path

from lib.config import ExperimentSettings, load_config
from lib.errors import UserError, run_cli
from lib.eval.kitti_format import latest_result_dir, load_labels, load_results
from lib.eval.report import (
    AP_JSON,
    ERROR_JSON,
    REPORT_MARKDOWN,
    TABLE_CLASS,
    cell_values,
    format_error_summary,
    format_results_table,
)
from lib.kitti_io import find_split_file, read_split
from lib.utils import cli_types
from lib.utils.files import atomic_write_text
from lib.utils.jobs import REPO_ROOT, job_output, run_command, run_side_by_side, say
from lib.utils.run_lock import run_folder_lock

MAIN_STAGES = ("teacher", "student", "monommkd")
BASELINE_STAGES = ("monoskd", "monodistill")
CONTROL_STAGE = "control"  # --demo: MonoMMKD's steps with the DualKL weight at 0
DISTILL_STAGES = ("monommkd", CONTROL_STAGE, *BASELINE_STAGES)
ROW_LABELS = {CONTROL_STAGE: "control: student + MonoMMKD's steps, DualKL weight 0"}
SPREAD_PICTURE = "seed_spread.png"
DEMO_FRAMES = 200
DEMO_VAL_FRACTION = 0.2
DEMO_SEED = 0
# Nearer and more objects than the generator's default (2-8 at 5-60 m): at the demo's 384x128
# input a car 40 m away is ~9 px tall (2 cells of the stride-4 features), and a few CPU epochs
# learn the 2D boxes, from which the 3D depth follows, far better on larger, more numerous cars;
# beyond 25 m the models' AP at 3D IoU 0.7 changed order from run to run (BENCHMARKS.md, 'Demo
# and sanity settings: the tuning runs').
# Cost of the KITTI stages (batch 16, 3712 train frames), printed by --help; README 'Reproduction
# on GPUs' gives the sources.
GPU_COSTS = """cost of the KITTI stages (wall time falls about as 1 / the number of GPUs):
  monommkd, monoskd, monodistill  150 epochs; MonoSKD's published training log: 8.0 h on 4 RTX 3090
                                  (24 GB, 4 images each), ~32 GPU-hours; MonoDistill's log in the
                                  same repository: 2.3-3 min an epoch, ~6-7.5 h on the same GPUs
  teacher, student                160 epochs of one network (a distillation step also runs the
                                  frozen teacher): below the distillation stages' cost
  on a CPU                        ~1.4 s an image for one DLA-34 step at 1280x384 on 2 cores
                                  (BENCHMARKS.md): ~10 days for the student alone"""
DEMO_OBJECTS = "4-10"
DEMO_DEPTH_RANGE = "5-25"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=GPU_COSTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--demo", action="store_true", help="synthetic data and configs/demo/*.yaml (CPU)")
    parser.add_argument("--all", action="store_true", help="also train the MonoSKD and MonoDistill baselines")
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="outputs/reproduce (demo: outputs/demo)"
    )
    parser.add_argument(
        "--frames", type=cli_types.positive_int, default=DEMO_FRAMES, help="synthetic frames (--demo)"
    )
    parser.add_argument("--skip-done", action="store_true", help="skip stages whose evaluation exists")
    parser.add_argument(
        "--seeds", type=int, default=1, help="train every stage with N seeds; table cells: mean ± std"
    )
    parser.add_argument("--jobs", type=int, default=1, help="independent stages trained at once (default 1)")
    parser.add_argument(
        "--best-epoch",
        action="store_true",
        help="evaluate each stage's best.pth (chosen on val: optimistic) instead of its last epoch",
    )
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per machine for each training (torchrun)")
    parser.add_argument("--nnodes", type=int, default=1, help="machines (torchrun --nnodes)")
    parser.add_argument("--node-rank", type=int, default=0, help="this machine's rank (torchrun --node_rank)")
    parser.add_argument("--master-addr", help="address of the machine of rank 0 (torchrun --master_addr)")
    parser.add_argument(
        "--master-port", type=cli_types.tcp_port, default=29500, help="its port (torchrun --master_port)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print every command, run none")
    parser.add_argument("overrides", nargs="*", help="config overrides passed to every stage, key.sub=value")
    args = parser.parse_args(argv)
    check_launch_args(parser, args)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    return args


def check_launch_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error (status 2) on inconsistent --gpus / --nnodes / --node-rank / --jobs."""
    if args.gpus < 0 or args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        parser.error("need --gpus >= 0, --nnodes >= 1 and 0 <= --node-rank < --nnodes")
    if args.gpus == 0 and args.nnodes > 1:
        parser.error("--nnodes needs --gpus N (the GPUs of each machine)")
    if args.nnodes > 1 and not args.master_addr:
        parser.error("--nnodes > 1 needs --master-addr (the machine of --node-rank 0)")
    if args.gpus and args.jobs > 1:
        parser.error("--jobs N runs CPU stages side by side; with --gpus each stage has every GPU")


def launcher(args: argparse.Namespace) -> list[str]:
    """The start of each training command: this Python, or ``torchrun`` (as ``python -m
    torch.distributed.run``) with --gpus processes per machine and the multi-machine options."""
    if not args.gpus:
        return [sys.executable]
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.gpus}"]
    if args.nnodes == 1:
        return [*torchrun, "--standalone"]
    return [
        *torchrun,
        f"--nnodes={args.nnodes}",
        f"--node_rank={args.node_rank}",
        f"--master_addr={args.master_addr}",
        f"--master_port={args.master_port}",
    ]


def check_global_batch(
    overrides: dict[tuple[Path, str], list[str]], config_dir: Path, processes: int
) -> None:
    """Every stage's ``dataset.batch_size`` (the global batch) splits evenly over the processes."""
    for (_, stage), stage_args in overrides.items():
        batch = load_config(config_dir / f"{stage}.yaml", stage_args).dataset.batch_size
        if batch % processes:
            raise UserError(
                f"{stage}: dataset.batch_size {batch} (the global batch) does not split over "
                f"{processes} GPU processes; choose --gpus / --nnodes that divide it"
            )


def check_not_trained(run_dir: Path, *, skip_done: bool) -> None:
    """Refuse, before any stage runs, to train again over a stage's earlier checkpoints."""
    ckpt_dir = run_dir / "checkpoints"
    if not skip_done and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.pth")):
        raise UserError(
            f"{run_dir}: holds the checkpoints of an earlier run; pass --skip-done to reuse finished "
            "stages, or choose another --output-dir"
        )


def make_demo_data(data_dir: Path, *, frames: int) -> None:
    """The synthetic set and its depth maps (skipped when already there)."""
    if not (data_dir / "ImageSets" / "val.txt").is_file():
        run_command(demo_data_command(data_dir, frames))
    if not (data_dir / "training" / "depth_dense").is_dir():
        run_command([sys.executable, "tools/make_depth_maps.py", "--data-dir", str(data_dir)])


def demo_data_command(data_dir: Path, frames: int) -> list[str]:
    """The command that writes the demo's synthetic set with its depth maps (over an unfinished
    earlier one: make_demo_data runs it while the set lacks its val split)."""
    return [
        sys.executable, "tools/make_synthetic_kitti.py", "--out", str(data_dir), "--overwrite",
        "--frames", str(frames), "--seed", str(DEMO_SEED), "--val-fraction", str(DEMO_VAL_FRACTION),
        "--objects", DEMO_OBJECTS, "--depth-range", DEMO_DEPTH_RANGE,
    ]  # fmt: skip


def stage_overrides(stage: str, out_dir: Path, *, demo: bool, data_dir: Path | None = None) -> list[str]:
    """Overrides that chain the stages inside ``out_dir`` (checkpoints; the demo's data in
    ``data_dir``, by default ``out_dir/data``)."""
    overrides = []
    if demo:
        overrides.append(f"dataset.root_dir={data_dir or out_dir / 'data'}")
    if stage in DISTILL_STAGES:
        checkpoint = "last.pth" if demo else "best.pth"  # the demo evaluates only after its last epoch
        overrides += [
            f"distill.teacher_checkpoint={out_dir / 'teacher' / 'checkpoints' / checkpoint}",
            f"distill.student_checkpoint={out_dir / 'student' / 'checkpoints' / checkpoint}",
        ]
    return overrides


def seed_runs(out_dir: Path, num_seeds: int) -> list[tuple[int, Path]]:
    """(seed offset, output folder) of each repetition of the chain: ``out_dir`` itself for one
    seed (the config's), ``out_dir/seed_<k>`` with offset k = 0..N-1 for N > 1."""
    if num_seeds == 1:
        return [(0, out_dir)]
    return [(k, out_dir / f"seed_{k}") for k in range(num_seeds)]


def seed_override(config: Path, overrides: list[str], offset: int) -> list[str]:
    """``experiment.seed`` = the stage's configured seed + ``offset`` (nothing for offset 0)."""
    if offset == 0:
        return []
    return [f"experiment.seed={ExperimentSettings.from_config(load_config(config, overrides)).seed + offset}"]


def run_stage(
    stage: str,
    config: Path,
    out_dir: Path,
    overrides: list[str],
    *,
    skip_done: bool,
    width: int = 1,
    best_epoch: bool = False,
    launch: tuple[str, ...] = (sys.executable,),
    dry_run: bool = False,
) -> Path:
    """Train and evaluate one stage; returns its run folder. The evaluation reads the run's
    last.pth, or with ``best_epoch`` train_val's default (best.pth when the run evaluated during
    training, else last.pth). With ``width`` > 1 it runs beside others: its output goes to
    ``out_dir/<stage>.log`` and it gets its share of the CPU cores."""
    cfg = load_config(config, overrides)
    run_dir = out_dir / ExperimentSettings.from_config(cfg).name
    ap_file = latest_result_dir(run_dir, cfg.tester.split) / AP_JSON
    if skip_done and ap_file.is_file():
        say(f"== {stage}: done already ({ap_file})")
        return run_dir
    say(f"== {stage}: training ({config})")
    base = ["tools/train_val.py", "--config", str(config), "--output-dir", str(out_dir)]
    last = [] if best_epoch else [f"tester.checkpoint={run_dir / 'checkpoints' / 'last.pth'}"]
    commands = [[*launch, *base, *overrides], [sys.executable, *base, "-e", *overrides, *last]]
    if dry_run:
        for command in commands:
            say("$ " + shlex.join(command))
        return run_dir
    side_by_side = job_output(out_dir / f"{stage}.log", width)
    start = time.perf_counter()
    for command in commands:
        run_command(command, **side_by_side)
    say(f"== {stage}: {time.perf_counter() - start:.0f} s")
    return run_dir


def stage_waves(keys: list[tuple[Path, str]]) -> list[list[tuple[Path, str]]]:
    """The (chain folder, stage) pairs in the order they can run: first every teacher and student
    (independent of each other), then the distillation stages, which read both checkpoints."""
    first = [key for key in keys if key[1] not in DISTILL_STAGES]
    return [wave for wave in (first, [key for key in keys if key[1] in DISTILL_STAGES]) if wave]


def train_stages(
    overrides: dict[tuple[Path, str], list[str]],
    config_dir: Path,
    *,
    skip_done: bool,
    jobs: int,
    best_epoch: bool = False,
    launch: tuple[str, ...] = (sys.executable,),
    dry_run: bool = False,
) -> dict[str, list[Path]]:
    """Train and evaluate every (chain folder, stage) of ``overrides``, wave by wave
    (:func:`stage_waves`); returns each stage's run folders in chain order."""
    run_dirs: dict[str, list[Path]] = {}
    for wave in stage_waves(list(overrides)):
        runs = [
            partial(
                run_stage,
                stage,
                config_dir / f"{stage}.yaml",
                chain_dir,
                overrides[chain_dir, stage],
                skip_done=skip_done,
                best_epoch=best_epoch,
                launch=launch,
                dry_run=dry_run,
            )
            for chain_dir, stage in wave
        ]
        for (_, stage), run_dir in zip(wave, run_side_by_side(runs, width=jobs), strict=True):
            run_dirs.setdefault(stage, []).append(run_dir)
    return run_dirs


def error_reports(run_dir: Path) -> dict | None:
    """The error_analysis.json of a run's ``-e`` evaluation (None for a run evaluated without it)."""
    cfg = load_config(run_dir / "config.yaml")
    path = latest_result_dir(run_dir, cfg.tester.split) / ERROR_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def strict_reports(run_dir: Path) -> dict:
    """The ap.json of a run's ``-e`` evaluation (IoU 0.7, the KITTI protocol)."""
    cfg = load_config(run_dir / "config.yaml")
    return json.loads((latest_result_dir(run_dir, cfg.tester.split) / AP_JSON).read_text())


def loose_reports(run_dir: Path) -> dict:
    """AP40 of a run's val results at the loose overlaps (Car BEV/3D 0.5)."""
    from lib.eval.kitti_eval import evaluate  # numba (seconds): not for --help

    cfg = load_config(run_dir / "config.yaml")
    root = Path(cfg.dataset.root_dir)
    frames = read_split(find_split_file(root, cfg.tester.split))
    gt = load_labels(root / "training" / "label_2", frames)
    det = load_results(latest_result_dir(run_dir, cfg.tester.split), frames)
    return evaluate(gt, det, [TABLE_CLASS], ap_modes=(40,), loose=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = (args.output_dir or Path("outputs/demo" if args.demo else "outputs/reproduce")).resolve()
    config_dir = REPO_ROOT / "configs" / ("demo" if args.demo else "")
    stages = MAIN_STAGES + ((CONTROL_STAGE,) if args.demo else ()) + (BASELINE_STAGES if args.all else ())
    start = time.perf_counter()
    overrides = {}  # (chain folder, stage) -> overrides; the seed's last, so that it wins
    for offset, chain_dir in seed_runs(out_dir, args.seeds):
        for s in stages:
            chain = stage_overrides(s, chain_dir, demo=args.demo, data_dir=out_dir / "data")
            given = chain + list(args.overrides)
            overrides[chain_dir, s] = given + seed_override(config_dir / f"{s}.yaml", given, offset)
    check_stage_folders(overrides, config_dir, skip_done=args.skip_done)
    check_global_batch(overrides, config_dir, max(1, args.gpus) * args.nnodes)
    if args.dry_run:
        if args.demo:
            say(f"$ (demo data, when absent) {shlex.join(demo_data_command(out_dir / 'data', args.frames))}")
        train_stages(overrides, config_dir, skip_done=args.skip_done, jobs=1, best_epoch=args.best_epoch,
                     launch=tuple(launcher(args)), dry_run=True)  # fmt: skip
        return 0
    with run_folder_lock(out_dir):
        return run_chains(args, out_dir, config_dir, overrides, start)


def check_stage_folders(
    overrides: dict[tuple[Path, str], list[str]], config_dir: Path, *, skip_done: bool
) -> None:
    """Before anything runs: every stage's config and overrides load, each stage gets its own run
    folder (an ``experiment.name`` override would send them all into one), and none is trained."""
    owners: dict[Path, str] = {}
    for (chain_dir, stage), stage_args in overrides.items():  # a bad key or value fails here
        cfg = load_config(config_dir / f"{stage}.yaml", stage_args)
        run_dir = chain_dir / ExperimentSettings.from_config(cfg).name
        if run_dir in owners:
            raise UserError(
                f"{run_dir}: the stages {owners[run_dir]} and {stage} would both write this run folder "
                "(an experiment.name override names every stage alike); drop that override: each stage "
                "is named by its config"
            )
        owners[run_dir] = stage
        check_not_trained(run_dir, skip_done=skip_done)


def run_chains(
    args: argparse.Namespace,
    out_dir: Path,
    config_dir: Path,
    overrides: dict[tuple[Path, str], list[str]],
    start: float,
) -> int:
    """The demo data, every stage, and the tables (``out_dir`` locked by the caller)."""
    if args.demo:
        make_demo_data(out_dir / "data", frames=args.frames)
    run_dirs = train_stages(
        overrides, config_dir, skip_done=args.skip_done, jobs=args.jobs, best_epoch=args.best_epoch,
        launch=tuple(launcher(args)),
    )  # fmt: skip
    table = results_tables(run_dirs, demo=args.demo, seeds=args.seeds, best_epoch=args.best_epoch)
    table_path = atomic_write_text(out_dir / "table.md", table)
    report_path = atomic_write_text(out_dir / REPORT_MARKDOWN, format_run_report(out_dir, table, run_dirs))
    print(f"\n{table}\nwritten to {table_path} and {report_path}; total {time.perf_counter() - start:.0f} s")
    return 0


def results_tables(run_dirs: dict[str, list[Path]], *, demo: bool, seeds: int, best_epoch: bool) -> str:
    """The markdown tables of every stage's evaluation (rows labelled by :data:`ROW_LABELS`)."""
    spread = "" if seeds == 1 else f"; per seed, mean ± std and min–max over {seeds} seeds"
    epoch = "best epoch on val, optimistic" if best_epoch else "last epoch"
    rows = {ROW_LABELS.get(stage, stage): dirs for stage, dirs in run_dirs.items()}
    strict = {label: [strict_reports(d) for d in dirs] for label, dirs in rows.items()}
    title = f"{TABLE_CLASS} AP40 on val, IoU 0.7 (KITTI protocol; {epoch}{spread})"
    table = format_results_table(strict, title=title)
    if demo:
        loose = {label: [loose_reports(d) for d in dirs] for label, dirs in rows.items()}
        title = f"{TABLE_CLASS} AP40 on val, loose overlaps (BEV/3D 0.5, 2D 0.7; {epoch}{spread})"
        table += "\n" + format_results_table(loose, title=title, metrics=("bbox", "bev", "3d"))
    errors = {label: [error_reports(d) for d in dirs] for label, dirs in rows.items()}
    spread = "" if seeds == 1 else f"; mean ± std over {seeds} seeds"
    title = f"{TABLE_CLASS} errors on val (Moderate, all distances, any score; {epoch}{spread})"
    return table + "\n" + format_error_summary(errors, title=title)


def format_run_report(out_dir: Path, table: str, run_dirs: dict[str, list[Path]]) -> str:
    """``<out_dir>/report.md``: the tables, the spread of the seeds (drawn into
    :data:`SPREAD_PICTURE` when a stage has several runs), then each run's pictures and report
    (the files its evaluation wrote; those that are missing are left out)."""
    lines = ["# Reproduction", "", table]
    if any(len(dirs) > 1 for dirs in run_dirs.values()):
        from lib.eval import plots  # matplotlib: imported only when a picture is drawn

        mods = {
            stage: cell_values([strict_reports(d) for d in dirs], ("3d",))[1]
            for stage, dirs in run_dirs.items()
        }
        title = f"{TABLE_CLASS} 3D Mod AP40 at IoU 0.7, one dot per seed"
        plots.save(plots.draw_seed_spread(mods, title=title), out_dir / SPREAD_PICTURE)
        lines += ["## Spread over seeds", "", f"![seed spread]({SPREAD_PICTURE})", ""]
    for stage, dirs in run_dirs.items():
        for run_dir in dirs:
            results = result_folder(run_dir)
            name = run_dir.relative_to(out_dir).as_posix()
            lines += [f"## {ROW_LABELS.get(stage, stage)}: {name}", ""]
            for file in (f"pr_{TABLE_CLASS}.png", f"errors_{TABLE_CLASS}.png", REPORT_MARKDOWN):
                if (results / file).is_file():
                    link = (results / file).relative_to(out_dir).as_posix()
                    lines.append(
                        f"[{link}]({link})" if file == REPORT_MARKDOWN else f"![{stage} {file}]({link})"
                    )
            lines.append("")
    return "\n".join(lines)


def result_folder(run_dir: Path) -> Path:
    """The folder of a run's ``-e`` evaluation (``results/<tester.split>``)."""
    return latest_result_dir(run_dir, load_config(run_dir / "config.yaml").tester.split)


if __name__ == "__main__":
    sys.exit(run_cli(main))
