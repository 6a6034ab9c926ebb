"""Training trajectories against the reference trainers (docs/parity.md, "Training trajectories").

Our trainer runs 11 epochs x 3 steps from the seeded weights of the reference runs, on the same
batches (tools/parity/trajectory.py), and is compared step by step with fixtures
tests/fixtures/parity/trajectory_{gupnet,did,skd}.npz: GUPNet's ``Trainer`` (gupnet), MonoSKD's
RGB baseline (did) and MonoSKD's distillation with its KD terms (skd).

The configs, with today's keys (tools/parity/trajectory.py ``our_config``): configs/gupnet.yaml,
configs/did_m3d.yaml and configs/monoskd.yaml as shipped (optimizer, weight decay, warm-up, HTL
with ``loss.htl_horizon: 140`` and ``trainer.htl_init_pass`` true / false / false,
``distill.teacher_bn: train``, KD weights 1), plus ``dataset.resolution=[192, 64]``,
``dataset.batch_size=2``, no augmentation (``random_flip=0``, ``random_crop=0``, ``color_aug=false``),
``model.pretrained=false``, ``model.depth_branch=false``, ``trainer.max_epoch=11``, no evaluation,
and the reference settings of docs/parity.md that move a trajectory: ``model.vis_depth_scale=box``,
``depth_input.scale=4.8828125e-05``; the Laplacian constant (no config key) is set to the
references' 1.4142 (lib.losses.detection.LAPLACE_SQRT2).

Tolerances come from the references' own run-to-run noise: each fixture holds the reference run
on 1 torch thread (``ref/``) and on 2 (``ref2/``). Their relative difference, maximised over the
columns of a quantity (the 7 terms, the total, the gradient norm, the 3 KD terms) and over the
steps so far, is the noise envelope of a step; ours must stay within NOISE_FACTOR times it (plus
RTOL_FLOOR, the float32 rounding of one step). The runs are chaotic (docs/parity.md, "Training
trajectories"): the first steps are checked closely, the later ones against gross errors.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import lib.losses.detection as detection
from lib.losses.criterion import LossSettings, build_htl
from lib.losses.detection import HTL_TASKS
from lib.losses.task_weighting import MONOSKD_READ_ORDER

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "parity"
_spec = importlib.util.spec_from_file_location("trajectory", REPO / "tools" / "parity" / "trajectory.py")
tr = importlib.util.module_from_spec(_spec)  # tools/ is not a package: load the script by its path
_spec.loader.exec_module(tr)
REGENERATE = "python tools/parity/trajectory.py --gupnet PATH --monoskd PATH"
REFERENCE_LAPLACE = 1.4142  # GUPNet / MonoSKD lib/losses/uncertainty_loss.py
KINDS = ("gupnet", "did", "skd")
STEP_KEYS = ("terms", "total", "grad_norm", "kd_terms")
# Per step and quantity, ours may differ from the 1-thread reference by NOISE_FACTOR x the largest
# 1-vs-2-thread difference of that quantity so far, plus RTOL_FLOOR (float32 rounding of a step).
NOISE_FACTOR = 20.0
RTOL_FLOOR = 1e-5
# Final weights: per trained tensor, the norm of its change and 8 sampled elements of the change;
# the median and 90th percentile of our relative errors within PARAM_FACTOR x the reference's own.
PARAM_FACTOR = 3.0
QUANTILES = (50, 90)


def load_fixture(kind: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"trajectory_{kind}.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def reference(fixture: dict[str, np.ndarray], prefix: str = "ref/") -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in fixture.items() if k.startswith(prefix)}


def relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| / |b| per element (0 where both are 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.where((a == 0) & (b == 0), 0.0, np.abs(a - b) / np.maximum(np.abs(b), 1e-12))


def sane_steps(run: dict[str, np.ndarray]) -> int:
    """Steps of a run before its first epoch with an HTL weight of a 3D term >= 1.

    The reference's HTL exponent 1 - (product of pre-task factors) turns negative when two
    pre-task trends are negative, and time^(negative) explodes (docs/parity.md, "HTL degenerate
    cases"; ours clips the exponent at 0, weight 1; "Training trajectories" says which run
    reaches it). Steps from there on are no rounding noise.
    """
    bad = np.flatnonzero((run["htl_weights"][:, 3:] >= 1).any(1))
    epochs = int(bad[0]) if bad.size else len(run["htl_weights"])
    return epochs * len(tr.BATCHES)


def step_tolerance(fixture: dict[str, np.ndarray], key: str) -> np.ndarray:
    """(steps, 1) relative tolerance of ``key`` (module docstring): the references' 1-vs-2-thread
    difference of ``key`` (every column), maximised over the steps so far (rounding differences
    only grow), x NOISE_FACTOR + RTOL_FLOOR."""
    ref, ref2 = reference(fixture), reference(fixture, "ref2/")
    noise = relative(ref2[key], ref[key]).reshape(len(ref["total"]), -1).max(1, keepdims=True)
    return NOISE_FACTOR * np.maximum.accumulate(noise, axis=0) + RTOL_FLOOR


@pytest.fixture(scope="module")
def kitti(kitti_sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's frames, rebuilt (tools/parity/data_targets.py build_inputs)."""
    return tr.data_targets.build_inputs(kitti_sample_dir, tmp_path_factory.mktemp("trajectory"))


@pytest.fixture(scope="module")
def runs(kitti: Path, module_tmp: Path):
    """``runs(kind)`` -> (our trajectory, the fixture); each kind is trained once per module.

    The skd run reads its HTL inputs as MonoSKD's distillation trainer does
    (``loss.htl_inputs=monoskd_columns``; test_htl_weights_from_the_reference_losses)."""
    cache: dict[str, tuple[dict, dict]] = {}

    def run(kind: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        if kind not in cache:
            fixture = load_fixture(kind)
            original, detection.LAPLACE_SQRT2 = detection.LAPLACE_SQRT2, REFERENCE_LAPLACE
            try:
                ours = tr.run_ours(kind, kitti, module_tmp / kind / "run")
            finally:
                detection.LAPLACE_SQRT2 = original
            cache[kind] = (ours, fixture)
        return cache[kind]

    return run


def _first_miss(rel: np.ndarray, tol: np.ndarray) -> str:
    step, col = np.argwhere(rel > tol)[0]
    return f"first at step {step}, column {col}: relative {rel[step, col]:.3g} > tolerance {tol[step, 0]:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_same_start_batches_and_lr(runs, kind: str) -> None:
    ours, fixture = runs(kind)
    ref = reference(fixture)
    np.testing.assert_allclose(
        ours["weight_checksum"], ref["weight_checksum"], rtol=1e-12, err_msg=REGENERATE
    )
    np.testing.assert_allclose(
        ours["batch_checksum"], fixture["batch_checksum"], rtol=1e-6, err_msg=REGENERATE
    )
    assert len(ours["total"]) == len(ref["total"]) == tr.EPOCHS * len(tr.BATCHES)
    # lr of every step (float32 in the fixture): 1e-5, the cosine warm-up, then the base lr
    np.testing.assert_allclose(ours["lr"], ref["lr"], rtol=1e-6)
    assert ref["lr"][0] == pytest.approx(1e-5) and ref["lr"][-1] == pytest.approx(ours["lr"][-1])


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_steps_within_reference_noise(runs, kind: str) -> None:
    """Every loss term, the total, the gradient norm (and the KD terms) at every step."""
    ours, fixture = runs(kind)
    ref, ref2 = reference(fixture), reference(fixture, "ref2/")
    steps = len(ref["total"])
    # steps compared: those before any of the three runs leaves HTL's range (sane_steps; the skd
    # run trains with the reference's weights)
    compared = min(sane_steps(ref), sane_steps(ref2), sane_steps(ours) if kind != "skd" else steps)
    assert compared >= 30, f"{kind}: only {compared} steps before HTL's degenerate case"
    for key in STEP_KEYS:
        if key not in ref:
            continue
        rel = relative(ours[key], ref[key]).reshape(steps, -1)[:compared]
        tol = step_tolerance(fixture, key)[:compared]
        assert (rel <= tol).all(), f"{kind} {key}: {_first_miss(rel, tol)}"
    # the first step is the same computation up to float32 rounding (nothing has diverged yet)
    assert relative(ours["total"][0], ref["total"][0]) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_final_parameters(runs, kind: str) -> None:
    """Every trained tensor's change from the seeded start: its norm and 8 sampled elements."""
    ours, fixture = runs(kind)
    ref, ref2 = reference(fixture), reference(fixture, "ref2/")
    np.testing.assert_array_equal(ours["param_names"], ref["param_names"])
    if sane_steps(ref2) < len(ref2["total"]):
        pytest.skip(f"{kind}: the 2-thread reference run left HTL's range (sane_steps): no noise sample")
    errors = {"norms": relative(ours["param_norms"], ref["param_norms"])}
    noise = {"norms": relative(ref2["param_norms"], ref["param_norms"])}
    scale = np.maximum(np.abs(ref["param_samples"]).max(1, keepdims=True), 1e-12)  # per tensor
    errors["samples"] = np.abs(ours["param_samples"] - ref["param_samples"]) / scale
    noise["samples"] = np.abs(ref2["param_samples"] - ref["param_samples"]) / scale
    for what in errors:
        for q in QUANTILES:
            ours_q, noise_q = np.percentile(errors[what], q), np.percentile(noise[what], q)
            assert ours_q <= PARAM_FACTOR * noise_q + RTOL_FLOOR, (
                f"{kind} {what} p{q}: {ours_q:.3g} vs {noise_q:.3g}"
            )


OUR_NAMES = {"affinity_kd": "affinity", "head_kd": "response", "spearman_kd": "spearman"}


def htl_replay(kind: str, rows: np.ndarray, columns: list[str], inputs: str | None = None) -> np.ndarray:
    """(epochs, 7) our HTL weights (the kind's config; ``inputs``: its ``loss.htl_inputs`` replaced)
    fed the reference's epoch-mean losses: ``rows`` as the reference trainer gave them to its HTL,
    each column named ``columns`` (the reference's names: ``offset2d_loss``, ``head_kd``, ...)
    taken by our name."""
    cfg = tr.our_config(kind, Path("unused"), Path("unused") / "run")
    loss = LossSettings.from_config(cfg)
    htl = build_htl(replace(loss, htl_inputs=inputs or loss.htl_inputs), max_epoch=cfg.trainer.max_epoch)
    names = [OUR_NAMES.get(c, c.removesuffix("_loss")) for c in columns]
    means = [{n: float(v) for n, v in zip(names, row, strict=True)} for row in rows]
    if kind != "skd":  # GUPNet and MonoSKD's baseline hand their HTL the epoch-0 pass first
        first, means = means[0], means[1:]
        if cfg.trainer.htl_init_pass:  # GUPNet keeps it in the history, MonoSKD drops it
            htl.update(first)
    weights = []
    for epoch in range(tr.EPOCHS):
        weights.append([float(htl.compute_weights(epoch).get(t, 1.0)) for t in HTL_TASKS])
        if epoch < len(means):
            htl.update(means[epoch])
    return np.array(weights)


@pytest.mark.parametrize("kind", KINDS)
def test_htl_weights_from_the_reference_losses(kind: str) -> None:
    """Our HTL, fed the epoch means the reference trainer fed its own, gives its weights.

    MonoSKD's distillation trainer (skd) is the documented exception (docs/parity.md, "Training
    trajectories"): its epoch means put the KD terms first (affinity_kd, head_kd, spearman_kd),
    but its HTL reads them by the column indices of the epoch-0 pass (7 detection terms), so
    the 3D weights follow the trends of the KD terms. Ours reads them by name (``loss.htl_inputs:
    by_name``) and differs from the 3D terms' second weighted epoch on; ``monoskd_columns`` reads
    them as the reference does and gives its weights.
    """
    run = reference(load_fixture(kind), "ref2/")  # the run that recorded its HTL inputs
    keys, read = [str(k) for k in run["htl_input_keys"]], [str(k) for k in run["htl_index2term"]]
    named = htl_replay(kind, run["htl_inputs"], keys, "by_name")
    if kind != "skd":
        assert keys == read
        epochs = sane_steps(run) // len(tr.BATCHES)  # then ours clips the exponent, docs/parity.md
        np.testing.assert_allclose(named[:epochs], run["htl_weights"][:epochs], rtol=1e-5, atol=1e-7)
        assert (named <= 1).all()
        assert named[-1, 3] > 0  # the 3D terms are on by the last epoch
        return
    assert keys[:3] == ["affinity_kd", "head_kd", "spearman_kd"] and len(read) == len(HTL_TASKS)
    assert read == [f"{t}_loss" for t in MONOSKD_READ_ORDER]  # the order monoskd_columns assumes
    columns = htl_replay(kind, run["htl_inputs"], keys, "monoskd_columns")
    np.testing.assert_allclose(columns, run["htl_weights"], rtol=1e-5, atol=1e-7)
    first = int(np.argmax(run["htl_weights"][:, 3] > 0))  # the first epoch with 3D weights
    np.testing.assert_array_equal(named[:first], run["htl_weights"][:first])
    assert np.abs(named[first:] - run["htl_weights"][first:]).max() > 1e-3
