"""Parameter groups and the per-epoch lr schedule (docs/reference.md, 'Training schedules and
hyper-parameters'), checked against hand values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lib.config import ConfigError
from lib.engine.optim import (
    LrSchedulerSettings,
    OptimizerSettings,
    build_lr_scheduler,
    build_optimizer,
    build_param_groups,
    lr_factor,
)


def opt_settings(type: str, lr: float, weight_decay: float, momentum: float = 0.9) -> OptimizerSettings:
    return OptimizerSettings(type=type, lr=lr, weight_decay=weight_decay, momentum=momentum)


def schedule(
    warmup_epochs: int, warmup_start_lr: float, decay_rate: float, decay_list
) -> LrSchedulerSettings:
    return LrSchedulerSettings(
        warmup=warmup_epochs > 0,
        warmup_epochs=warmup_epochs,
        warmup_start_lr=warmup_start_lr,
        decay_rate=decay_rate,
        decay_list=tuple(decay_list),
    )


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # weight decayed, bias not
        self.bn = nn.BatchNorm2d(4)  # weight decayed (as GUPNet), bias not
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_bias_parameters_get_no_weight_decay():
    model = TwoLayer()
    groups = build_param_groups(model.named_parameters(), weight_decay=1e-5)
    decay, no_decay = groups
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.conv.weight), id(model.bn.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model.conv.bias), id(model.bn.bias)}


def test_frozen_parameters_never_reach_the_optimizer():
    model = TwoLayer()
    optimizer = build_optimizer(model.named_parameters(), opt_settings("sgd", 0.1, 0.0, momentum=0.5))
    params = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.frozen.weight) not in params and id(model.frozen.bias) not in params
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.5
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        opt_settings("lamb", 0.1, 0.0)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_cpu_optimizer_is_fused_and_matches_the_per_tensor_update(name):
    torch.manual_seed(0)
    model = TwoLayer()
    reference = TwoLayer()
    reference.load_state_dict(model.state_dict())
    fused = build_optimizer(model.named_parameters(), opt_settings(name, 0.01, 1e-3))
    assert fused.param_groups[0]["fused"] is True
    loop_groups = build_param_groups(reference.named_parameters(), weight_decay=1e-3)
    if name == "adam":
        loop = torch.optim.Adam(loop_groups, lr=0.01, foreach=False)
    else:
        loop = torch.optim.SGD(loop_groups, lr=0.01, momentum=0.9, foreach=False)
    x = torch.randn(2, 3, 5, 5)
    for _ in range(3):
        for net, opt in ((model, fused), (reference, loop)):
            opt.zero_grad()
            net.conv(x).square().mean().backward()  # BN would leave the conv bias a rounding-noise grad
            opt.step()
    for (key, a), b in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}")
    assert not torch.equal(model.conv.weight, TwoLayer().conv.weight)


def test_warmup_matches_monoskd_log_values():
    # docs/reference.md, 'Training schedules and hyper-parameters': SKD's log with base 1e-3: 1e-5, 1.05e-4,
    # 3.52e-4, 6.58e-4, 9.05e-4, then 1e-3.
    kwargs = dict(base_lr=1e-3, warmup_epochs=5, warmup_start_lr=1e-5, decay_rate=0.1, decay_list=[95, 125])
    lrs = [1e-3 * lr_factor(e, **kwargs) for e in range(6)]
    assert lrs == pytest.approx(
        [1e-5, 1.05e-4, 3.52e-4, 6.58e-4, 9.05e-4, 1e-3], rel=5e-3
    )  # log rounds to 3 digits
    # by hand for e = 2: 1e-5 + (1e-3 - 1e-5) * (1 - cos(2π/5)) / 2
    assert lrs[2] == pytest.approx(1e-5 + 0.99e-3 * (1 - math.cos(2 * math.pi / 5)) / 2, rel=1e-12)


def test_scheduler_decays_at_gupnet_effective_epochs():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1.25e-3)
    scheduler = build_lr_scheduler(optimizer, schedule(5, 1e-5, 0.1, [95, 125]))
    lrs = []
    for _ in range(140):  # lr used by each 0-based epoch, stepped after it
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[5] == pytest.approx(1.25e-3) and lrs[94] == pytest.approx(1.25e-3)
    # GUPNet's effective drops: 96th and 126th epoch (1-based) = index 95 and 125.
    assert lrs[95] == pytest.approx(1.25e-4) and lrs[124] == pytest.approx(1.25e-4)
    assert lrs[125] == pytest.approx(1.25e-5) and lrs[139] == pytest.approx(1.25e-5)


def test_scheduler_state_round_trip_continues_the_schedule():
    def make():
        param = nn.Parameter(torch.zeros(1))
        opt = torch.optim.Adam([param], lr=1e-3)
        return opt, build_lr_scheduler(opt, schedule(3, 0.0, 0.5, [4]))

    opt, sched = make()
    for _ in range(3):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2, sched2 = make()
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    for _ in range(2):
        opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) == pytest.approx(5e-4)


def test_no_warmup_and_mixed_base_lrs():
    assert lr_factor(
        0, base_lr=1.0, warmup_epochs=0, warmup_start_lr=0.0, decay_rate=0.1, decay_list=[0]
    ) == (pytest.approx(0.1))
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 2.0}])
    with pytest.raises(ValueError, match="one base lr"):
        build_lr_scheduler(opt, schedule(1, 0.0, 0.1, []))


def test_warmup_false_starts_at_the_base_lr_whatever_warmup_epochs_says():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=2e-3)
    off = LrSchedulerSettings(
        warmup=False, warmup_epochs=5, warmup_start_lr=1e-5, decay_rate=0.5, decay_list=(2,)
    )
    scheduler = build_lr_scheduler(opt, off)
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert lrs == pytest.approx([2e-3, 2e-3, 1e-3])  # by hand: base, base, base x 0.5 from epoch 2


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"type": "lamb"}, "optimizer.type: unknown optimizer 'lamb' (choose from adam, sgd)"),
        ({"lr": 0.0}, "optimizer.lr must be > 0, got 0.0"),
        ({"weight_decay": -1e-4}, "optimizer.weight_decay must be >= 0, got -0.0001"),
        ({"momentum": 1.0}, "optimizer.momentum must be in [0, 1), got 1.0"),
    ],
)
def test_optimizer_settings_name_the_bad_key(section, message):
    values = {"type": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9, **section}
    with pytest.raises(ConfigError) as info:
        OptimizerSettings.from_config(values)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"warmup_epochs": 0}, "lr_scheduler.warmup_epochs must be >= 1, got 0 (lr_scheduler.warmup=false"),
        ({"warmup": False, "warmup_epochs": -1}, "lr_scheduler.warmup_epochs must be >= 0, got -1"),
        ({"decay_rate": 0.0}, "lr_scheduler.decay_rate must be > 0, got 0.0"),
        ({"decay_list": [10, -1]}, "lr_scheduler.decay_list must hold epochs (ints >= 0), got [10, -1]"),
        ({"warmup_start_lr": -1.0}, "lr_scheduler.warmup_start_lr must be >= 0, got -1.0"),
    ],
)
def test_lr_scheduler_settings_name_the_bad_key(section, message):
    values = {
        "warmup": True,
        "warmup_epochs": 5,
        "warmup_start_lr": 1e-5,
        "decay_rate": 0.1,
        "decay_list": [95],
    }
    with pytest.raises(ConfigError) as info:
        LrSchedulerSettings.from_config({**values, **section})
    assert str(info.value).startswith(message)


def test_settings_fields_are_exactly_the_base_yaml_sections():
    from lib.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "base.yaml")
    assert OptimizerSettings.from_config(cfg.optimizer) == OptimizerSettings(
        type="adam", lr=0.00125, weight_decay=0.00001, momentum=0.9
    )
    assert LrSchedulerSettings.from_config(cfg.lr_scheduler).decay_list == (95, 125)
    with pytest.raises(ValueError, match=r"only in the section: \['nesterov'\]"):
        OptimizerSettings.from_config({**cfg.optimizer.to_dict(), "nesterov": True})
