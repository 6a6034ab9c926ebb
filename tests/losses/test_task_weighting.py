"""Hierarchical Task Learning weights (docs/reference.md, 'Hierarchical Task Learning'): hand-computed values,
an independent re-implementation over a random loss history, guards, and the checkpoint round trip."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from lib.losses.criterion import HTL_TASKS
from lib.losses.task_weighting import GUPNET_PRE_TASKS, HierarchicalTaskLearning, monoskd_columns

DEPENDENT = ("offset3d", "size3d", "heading", "depth")


def epoch_losses(t: int, **per_task: list[float]) -> dict[str, float]:
    """Means of epoch t: the listed tasks from their lists, the rest constant 1."""
    return {task: per_task[task][t] if task in per_task else 1.0 for task in HTL_TASKS}


def test_task_graph_is_gupnets_over_the_htl_tasks() -> None:
    assert set(GUPNET_PRE_TASKS) == set(HTL_TASKS)
    assert GUPNET_PRE_TASKS["depth"] == ("size2d", "size3d", "offset2d")
    assert all(not GUPNET_PRE_TASKS[t] for t in ("seg", "size2d", "offset2d"))


def test_weights_by_hand() -> None:
    size2d = [10, 8, 6, 4, 2, 1.5, 0.0]
    offset2d = [5, 5, 5, 5, 5, 5, 5]  # flat first window: trend 0 → counts as learned (ls = 1)
    size3d = [4, 3, 2, 1, 0, 0, 9]
    htl = HierarchicalTaskLearning(num_epochs=20, window=5)
    weights_by_epoch = []
    for t in range(8):
        weights_by_epoch.append(htl.compute_weights(t))
        if t < 7:
            htl.update(epoch_losses(t, size2d=size2d, offset2d=offset2d, size3d=size3d))
    for t, weights in enumerate(weights_by_epoch):
        assert all(weights[k] == 1.0 for k in ("seg", "size2d", "offset2d")), t
        if t <= 5:
            assert all(weights[k] == 0.0 for k in DEPENDENT), t
    # t=6: the window (epochs 0-4) is the first one: ratio 1, ls(size2d) = ls(size3d) = 0, α = 0
    assert all(weights_by_epoch[6][k] == pytest.approx(1 / 15) for k in DEPENDENT)
    # t=7: window epochs 1-5 (epoch 6 is the lagged latest mean): first trends size2d
    # ((10-6)+(8-4)+(6-2))/3 = 4, size3d 2; now size2d (4+4+2.5)/3 = 3.5 → ls 1/8,
    # size3d (2+2+1)/3 = 5/3 → ls 1/6
    time = (7 - 5) / (20 - 5)
    weights = weights_by_epoch[7]
    assert weights["offset3d"] == pytest.approx(time ** (1 - 1 / 8))
    assert weights["heading"] == pytest.approx(time ** (1 - 1 / 8))
    assert weights["size3d"] == pytest.approx(time ** (1 - 1 / 8))
    assert weights["depth"] == pytest.approx(time ** (1 - 1 / 8 * 1 / 6))


def test_first_weight_with_steady_trends_is_the_time_factor() -> None:
    htl = HierarchicalTaskLearning(num_epochs=140, window=5)
    weights = []
    for t in range(8):
        weights.append(htl.compute_weights(t)["depth"])
        htl.update({task: 100.0 - 3.0 * t for task in HTL_TASKS})  # same trend every window: α = 0
    assert weights == pytest.approx([0, 0, 0, 0, 0, 0, 1 / 135, 2 / 135])
    assert htl.compute_weights(140)["depth"] == 1.0
    assert htl.compute_weights(200)["depth"] == 1.0


def test_horizon_follows_num_epochs() -> None:
    short, long = (HierarchicalTaskLearning(num_epochs=n, window=5) for n in (30, 150))
    for t in range(6):
        for htl in (short, long):
            htl.update({task: 50.0 - t for task in HTL_TASKS})
    assert short.compute_weights(6)["heading"] == pytest.approx(1 / 25)
    assert long.compute_weights(6)["heading"] == pytest.approx(1 / 145)


def gupnet_schedule(
    means: np.ndarray, e0: np.ndarray, *, num_epochs: int, window: int, push_e0: bool
) -> list[dict[str, float]]:
    """GUPNet's ``Hierarchical_Task_Learning.compute_weight`` loop, re-stated: at epoch t it gets
    the previous epoch's means (e0 at t=0), computes the weights from its FIFO, pops when full,
    then pushes (MonoSKD: not at t=0). With this project's fixes: T = num_epochs, a zero first
    trend gives ls = 1, exponent clipped at 0, time 0 gives weight 0. ``means``: (E, 7) in
    HTL_TASKS order."""
    col = {task: i for i, task in enumerate(HTL_TASKS)}
    fifo: list[np.ndarray] = []
    init_diff = None
    schedule = []
    for t in range(num_epochs):
        current = e0 if t == 0 else means[t - 1]
        weights = {task: 0.0 if GUPNET_PRE_TASKS[task] else 1.0 for task in HTL_TASKS}
        if len(fifo) == window:
            past = np.stack(fifo)
            mean_diff = (past[:-2] - past[2:]).mean(axis=0)
            if init_diff is None:
                init_diff = mean_diff
            ratio = np.divide(mean_diff, init_diff, out=np.zeros_like(mean_diff), where=init_diff != 0)
            ls = 1 - np.maximum(ratio, 0)
            time = min((t - window) / (num_epochs - window), 1.0)
            for task, pres in GUPNET_PRE_TASKS.items():
                if pres and time > 0:
                    alpha = np.prod([ls[col[p]] for p in pres])
                    weights[task] = float(time ** max(1 - alpha, 0))
            fifo.pop(0)
        if t != 0 or push_e0:
            fifo.append(current)
        schedule.append(weights)
    return schedule


@pytest.mark.parametrize("push_e0", [True, False], ids=["gupnet_e0", "monoskd"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_gupnets_loop(seed: int, push_e0: bool) -> None:
    rng = np.random.default_rng(seed)
    num_epochs, window = 30, 5
    # random walks: later trends both steeper (ls < 0) and reversed (ls = 1) than the first
    means = 40 + np.cumsum(rng.uniform(-1.0, 0.3, size=(num_epochs, len(HTL_TASKS))), axis=0)
    e0 = means[0] + 2.0
    expected = gupnet_schedule(means, e0, num_epochs=num_epochs, window=window, push_e0=push_e0)
    htl = HierarchicalTaskLearning(num_epochs=num_epochs, window=window)
    if push_e0:
        htl.update(dict(zip(HTL_TASKS, e0.tolist(), strict=True)))
    seen_negative_ls = False
    for t in range(num_epochs):
        got = htl.compute_weights(t)
        assert got.keys() == expected[t].keys()
        for task in HTL_TASKS:
            assert got[task] == pytest.approx(expected[t][task], rel=1e-12, abs=1e-15), (t, task)
        if t > window:
            seen_negative_ls |= min(htl.learning_situation().values()) < 0
        htl.update(dict(zip(HTL_TASKS, means[t].tolist(), strict=True)))
    assert seen_negative_ls  # the data exercise GUPNet's unclipped learning situation
    assert all(expected[t]["depth"] == 0.0 for t in range(6)) and expected[6]["depth"] > 0


def test_flat_losses_give_finite_weights() -> None:
    htl = HierarchicalTaskLearning(num_epochs=10, window=3)
    for t in range(10):
        weights = htl.compute_weights(t)
        assert all(math.isfinite(w) for w in weights.values())
        assert weights["depth"] == (0.0 if t <= 3 else 1.0)  # ls = 1 → α = 1 → weight time^0
        htl.update(dict.fromkeys(HTL_TASKS, 0.0))


def test_run_shorter_than_the_window_keeps_dependent_tasks_off() -> None:
    htl = HierarchicalTaskLearning(num_epochs=3, window=5)
    for t in range(3):
        assert htl.compute_weights(t)["offset3d"] == 0.0
        htl.update(dict.fromkeys(HTL_TASKS, 1.0 / (t + 1)))


def test_epoch0_entry_keeps_the_first_weights_at_epoch_6() -> None:
    htl = HierarchicalTaskLearning(num_epochs=20, window=5)
    htl.update({task: 9.0 for task in HTL_TASKS})  # GUPNet's pre-training statistics pass
    for t in range(5):
        htl.update({task: 8.0 - t for task in HTL_TASKS})
    assert htl.compute_weights(5)["depth"] == 0.0  # window (e0, 0..3) exists, time factor 0
    htl.update({task: 3.0 for task in HTL_TASKS})
    # first trend (e0..3): ((9-7)+(8-6)+(7-5))/3 = 2; window 0..4 the same → ls 0, α 0
    assert htl.compute_weights(6)["depth"] == pytest.approx(1 / 15)


def test_state_round_trip_mid_training_gives_identical_weights() -> None:
    rng = np.random.default_rng(7)
    history = np.cumsum(rng.uniform(-1.0, 0.2, size=(25, len(HTL_TASKS))), axis=0) + 40
    means = [dict(zip(HTL_TASKS, row.tolist(), strict=True)) for row in history]
    full = HierarchicalTaskLearning(num_epochs=25, window=5)
    first = HierarchicalTaskLearning(num_epochs=25, window=5)
    for t in range(8):
        full.update(means[t])
        first.update(means[t])
    buffer = io.BytesIO()
    torch.save({"htl": first.state_dict()}, buffer)
    buffer.seek(0)
    resumed = HierarchicalTaskLearning(num_epochs=25, window=5)
    resumed.load_state_dict(torch.load(buffer, weights_only=True)["htl"])
    for t in range(8, 25):
        assert resumed.compute_weights(t) == full.compute_weights(t)
        resumed.update(means[t])
        full.update(means[t])
    assert resumed.compute_weights(24)["depth"] > 0


def test_load_state_dict_rejects_another_window() -> None:
    state = HierarchicalTaskLearning(num_epochs=10, window=5).state_dict()
    with pytest.raises(ValueError, match="window 5, this run .* 4"):
        HierarchicalTaskLearning(num_epochs=10, window=4).load_state_dict(state)


def test_update_errors_name_the_task() -> None:
    htl = HierarchicalTaskLearning(num_epochs=10, window=5)
    with pytest.raises(ValueError, match="no mean loss for task 'depth'"):
        htl.update({task: 1.0 for task in HTL_TASKS if task != "depth"})
    with pytest.raises(ValueError, match="mean loss of 'seg' is nan"):
        htl.update({**dict.fromkeys(HTL_TASKS, 1.0), "seg": float("nan")})
    htl.update({**dict.fromkeys(HTL_TASKS, 1.0), "depth_branch": 3.0})  # extra terms are ignored
    assert len(htl.history) == 1


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="window must be > 2"):
        HierarchicalTaskLearning(num_epochs=10, window=2)
    with pytest.raises(ValueError, match=r"pre-tasks \['size2d'\] of 'depth' are not tasks"):
        HierarchicalTaskLearning(num_epochs=10, window=5, pre_tasks={"seg": (), "depth": ("size2d",)})


def test_monoskd_columns_read_each_task_from_the_column_at_its_position() -> None:
    """MonoSKD's distillation HTL: the KD terms first in the means, read by the epoch-0 positions."""
    means = {"affinity": 1.0, "response": 2.0, "spearman": 3.0, "offset2d": 4.0, "size2d": 5.0}
    means |= {"depth": 6.0, "offset3d": 7.0, "size3d": 8.0, "heading": 9.0, "seg": 10.0}
    read = monoskd_columns(means)
    assert read == {
        "offset2d": 1.0,
        "size2d": 2.0,
        "depth": 3.0,
        "offset3d": 4.0,
        "size3d": 5.0,
        "heading": 6.0,
        "seg": 7.0,
    }
    htl = HierarchicalTaskLearning(num_epochs=20, window=3, inputs="monoskd_columns")
    htl.update(means)
    assert htl.history == [read]
    with pytest.raises(ValueError, match=r"needs the epoch means of \['spearman'\]"):
        monoskd_columns({k: v for k, v in means.items() if k != "spearman"})
    with pytest.raises(ValueError, match="inputs must be one of"):
        HierarchicalTaskLearning(num_epochs=20, window=3, inputs="by_position")
