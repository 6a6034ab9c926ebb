"""lib.distiller: the frozen teacher, the loss dict, checkpoints, and a few training steps per config.

Networks are tiny (ResNet-18, 64×32 input, K = 8 bins, 16-wide heads) and the batch is built by
hand from the batch layout (lib/datasets/kitti.py), so every test runs on CPU in about a second.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from lib.box_coding import draw_gaussian
from lib.config import Config, ConfigError, load_config
from lib.datasets.depth_maps import build_depth_map
from lib.datasets.kitti import build_dataset
from lib.datasets.masks import foreground_mask
from lib.depth_bins import RpdSettings, rpd_valid
from lib.distiller import Distiller, DistillSettings
from lib.kitti_io import write_depth_map
from lib.losses.criterion import Criterion, LossSettings
from lib.losses.distill import dual_kl_loss
from lib.models import Detector, ModelSettings, build_detector

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model.backbone=resnet18",
    "model.pretrained=false",
    "model.head_conv=16",
    "model.depth_branch_channels=16",
    "rpd.num_bins=8",
]
H, W, STRIDE, M = 32, 64, 4, 4
DISTILL_KEYS = {"dualkl", "dualkl_instance", "feature", "affinity", "spearman", "response"}
BASE = load_config(REPO / "configs" / "base.yaml")
BASE_DISTILL = DistillSettings.from_config(BASE)  # configs/base.yaml: every term off


def detector(cfg: Config, **changes: object) -> Detector:
    """The network of ``cfg`` with ``changes`` to its model section."""
    return build_detector(replace(ModelSettings.from_config(cfg), **changes), RpdSettings.from_config(cfg))


def criterion(cfg: Config) -> Criterion:
    """The training criterion of ``cfg``."""
    rpd = RpdSettings.from_config(cfg)
    return Criterion(model_type=cfg.model.type, loss=LossSettings.from_config(cfg), rpd=rpd)


def dualkl_on(**dualkl: object) -> DistillSettings:
    """configs/base.yaml's distill settings with ``dualkl`` changes to its DualKL section."""
    return replace(BASE_DISTILL, dualkl=replace(BASE_DISTILL.dualkl, **dualkl))


def make_batch(batch_size: int = 2, *, num_bins: int = 8, seed: int = 0) -> dict:
    """A training batch in the dataset's layout with two objects per image (targets built by hand)."""
    rng = np.random.default_rng(seed)
    hf, wf = H // STRIDE, W // STRIDE
    t = {
        "heatmap": np.zeros((batch_size, 3, hf, wf), np.float32),
        "indices": np.zeros((batch_size, M), np.int64),
        "cls_ids": np.zeros((batch_size, M), np.int64),
        "mask_2d": np.zeros((batch_size, M), bool),
        "size_2d": np.zeros((batch_size, M, 2), np.float32),
        "offset_2d": np.zeros((batch_size, M, 2), np.float32),
        "offset_3d": np.zeros((batch_size, M, 2), np.float32),
        "depth": np.zeros((batch_size, M, 1), np.float32),
        "size_3d": np.zeros((batch_size, M, 3), np.float32),
        "src_size_3d": np.zeros((batch_size, M, 3), np.float32),
        "heading_bin": np.zeros((batch_size, M, 1), np.int64),
        "heading_res": np.zeros((batch_size, M, 1), np.float32),
        "vis_depth": np.zeros((batch_size, M, 7, 7), np.float32),
        "att_depth": np.zeros((batch_size, M, 7, 7), np.float32),
        "depth_mask": np.zeros((batch_size, M, 7, 7), bool),
        "box2d": np.zeros((batch_size, M, 4), np.float32),
        "rpd_depth": np.zeros((batch_size, hf, wf), np.float32),
        "rpd_mask": np.zeros((batch_size, hf, wf), bool),
    }
    bins = replace(RpdSettings.from_config(BASE).bins, num_bins=num_bins)
    for b in range(batch_size):
        for i in range(2):
            x1, y1 = rng.uniform(0.5, wf - 6), rng.uniform(0.5, hf - 4)
            box = np.array([x1, y1, x1 + rng.uniform(2, 5), y1 + rng.uniform(2, 3)], np.float32)
            centre = (box[:2] + box[2:]) / 2
            cell = np.floor(centre).astype(np.int64)
            z = rng.uniform(8, 40)
            t["box2d"][b, i] = box
            t["indices"][b, i] = cell[1] * wf + cell[0]
            t["cls_ids"][b, i] = 1
            t["mask_2d"][b, i] = True
            t["size_2d"][b, i] = box[2:] - box[:2]
            t["offset_2d"][b, i] = centre - cell
            t["offset_3d"][b, i] = rng.uniform(-0.5, 0.5, 2)
            t["depth"][b, i] = z
            t["size_3d"][b, i] = rng.normal(0, 0.1, 3)
            t["src_size_3d"][b, i] = [1.5, 1.6, 3.9]
            t["heading_bin"][b, i] = rng.integers(12)
            t["heading_res"][b, i] = rng.uniform(-0.2, 0.2)
            t["vis_depth"][b, i] = z + rng.normal(0, 0.5, (7, 7))
            t["att_depth"][b, i] = z - t["vis_depth"][b, i]
            t["depth_mask"][b, i] = rng.random((7, 7)) < 0.7
            draw_gaussian(t["heatmap"][b, 1], (int(cell[0]), int(cell[1])), 1)
        lidar = np.where(rng.random((hf, wf)) < 0.6, rng.uniform(3, 70, (hf, wf)), 0.0)
        t["rpd_depth"][b], t["rpd_mask"][b] = lidar, rpd_valid(lidar, bins)
    targets = {k: torch.from_numpy(v) for k, v in t.items()}
    targets["fg_mask"] = foreground_mask(targets["box2d"], height=hf, width=wf, valid=targets["mask_2d"])
    gen = torch.Generator().manual_seed(seed)
    calib = torch.tensor([[700.0, 0.0, W / 2, 45.0], [0.0, 700.0, H / 2, -0.3], [0.0, 0.0, 1.0, 0.005]])
    return {
        "rgb": torch.randn(batch_size, 3, H, W, generator=gen),
        "depth": torch.rand(batch_size, 3, H, W, generator=gen),
        "calib": calib.expand(batch_size, 3, 4).clone(),
        "coord_range": torch.tensor([[0.0, 0.0], [W, H]]).expand(batch_size, 2, 2).clone(),
        "targets": targets,
    }


def sharpen_depth_branch(teacher: torch.nn.Module) -> torch.nn.Module:
    """A random teacher with confident depth distributions (the branch starts near-uniform, whose
    certainty weight would make DualKL vanish)."""
    torch.nn.init.normal_(teacher.depth_branch[-1].weight, std=0.5)
    return teacher


@pytest.fixture(scope="module")
def checkpoints(module_tmp: Path) -> dict[str, dict[str, Path]]:
    """Random tiny teacher / student files per model type, in two layouts.

    Teacher: an exported / GUPNet-style ``{"model_state", "epoch"}``; student: our trainer's layout
    (``model_state`` next to the task's ``model`` state).
    """
    folder = module_tmp
    files: dict[str, dict[str, Path]] = {}
    for model_type in ("did", "gupnet"):
        cfg = load_config(REPO / "configs" / "base.yaml", [*TINY, f"model.type={model_type}"])
        torch.manual_seed(1)
        teacher = sharpen_depth_branch(detector(cfg, input="depth"))
        student = detector(cfg)
        files[model_type] = {
            "teacher": folder / f"{model_type}_teacher.pth",
            "student": folder / f"{model_type}_s.pth",
        }
        torch.save({"model_state": teacher.state_dict(), "epoch": 3}, files[model_type]["teacher"])
        task_state = {f"detector.{k}": v for k, v in student.state_dict().items()}
        trainer_file = {
            "model_state": student.state_dict(),
            "task": "detector",
            "model": task_state,
            "epoch": 3,
        }
        torch.save(trainer_file, files[model_type]["student"])
    return files


def tiny_config(config: str, checkpoints: dict, *overrides: str, model_type: str = "did") -> Config:
    """``config`` with the tiny network and the fixture's checkpoint files."""
    files = checkpoints[model_type]
    return load_config(
        REPO / config,
        [
            *TINY,
            f"model.type={model_type}",
            f"distill.teacher_checkpoint={files['teacher']}",
            f"distill.student_checkpoint={files['student']}",
            *overrides,
        ],
    )


def load_distiller(config: str, checkpoints: dict, *overrides: str, model_type: str = "did") -> Distiller:
    cfg = tiny_config(config, checkpoints, *overrides, model_type=model_type)
    torch.manual_seed(0)
    return Distiller.from_config(cfg)


def train_steps(distiller: Distiller, batch: dict, steps: int = 3) -> tuple[list[float], set[str]]:
    """Adam steps on one fixed batch: the total loss before each step and the loss names."""
    optimizer = torch.optim.Adam(distiller.trainable_parameters(), lr=3e-4)
    distiller.train()
    totals = []
    for _ in range(steps):
        losses = distiller(batch)
        total = sum(losses.values())
        assert torch.isfinite(total), {k: v.item() for k, v in losses.items()}
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    return totals, set(losses)


def _term(distiller: Distiller, batch: dict, name: str) -> torch.Tensor:
    """Loss term ``name`` of a forward (``"total"``: the sum of all terms)."""
    losses = distiller(batch)
    return sum(losses.values()) if name == "total" else losses[name]


def _move(params: list[torch.Tensor], direction: list[torch.Tensor], step: float) -> None:
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(step * d)


def gradient_slopes(distiller: Distiller, batch: dict, names: list[str]) -> dict[str, float]:
    """For each loss term (``"total"``: their sum), its central difference along its own gradient g
    over the step ±eps·g, divided by |g|^2: 1 when backward is the derivative of the forward.

    eps moves a term by ±0.1 %, the L1 feature terms (affinity, feature) by ±0.01 % (they bend
    within ±0.1 %). A detached part of a term, or a term that reaches no trainable parameter, shows
    as a slope below 1 or an error.
    """
    distiller.train()
    params = list(distiller.trainable_parameters())
    slopes = {}
    for name in names:
        loss = _term(distiller, batch, name)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        norm2 = sum(float((g.double() ** 2).sum()) for g in grads)
        assert norm2 > 0, name
        eps = (1e-4 if name in ("affinity", "feature") else 1e-3) * abs(loss.item()) / norm2
        with torch.no_grad():
            _move(params, grads, eps)
            plus = _term(distiller, batch, name).item()
            _move(params, grads, -2 * eps)
            minus = _term(distiller, batch, name).item()
            _move(params, grads, eps)
        slopes[name] = (plus - minus) / (2 * eps * norm2)
    return slopes


# ------------------------------------------------------------------------------ configs
def test_every_config_loads() -> None:
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(files) >= 13
    for path in files:
        cfg = load_config(path)
        DistillSettings.from_config(cfg)  # the distill section is valid too


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "terms"),
    [
        ("configs/monommkd.yaml", {"dualkl"}),
        ("configs/monoskd.yaml", {"affinity", "spearman", "response"}),
        ("configs/monodistill.yaml", {"feature", "affinity", "response"}),
        ("configs/ablations/dualkl_forward.yaml", {"dualkl"}),
        ("configs/ablations/dualkl_reverse.yaml", {"dualkl"}),
        ("configs/ablations/dualkl_fixed.yaml", {"dualkl"}),
        ("configs/ablations/dualkl_no_uncertainty.yaml", {"dualkl"}),
        ("configs/ablations/rpd_ud.yaml", {"dualkl"}),
        ("configs/ablations/rpd_sid.yaml", {"dualkl"}),
        ("configs/ablations/rpd_lid.yaml", {"dualkl"}),
    ],
)
def test_each_config_gives_its_terms_with_exact_gradients(
    config: str, terms: set[str], checkpoints: dict
) -> None:
    """The config's loss terms; each distillation term and the total have the gradient of their value."""
    distiller = load_distiller(config, checkpoints)
    batch = make_batch()
    with torch.no_grad():
        names = set(distiller.train()(batch))
    assert names & DISTILL_KEYS == terms
    assert {"seg", "offset2d", "size2d", "offset3d", "size3d", "heading", "depth"} <= names
    assert ("depth_branch" in names) == ("dualkl" in terms)  # the baselines run without the branch
    slopes = gradient_slopes(distiller, batch, sorted(terms) + ["total"])
    assert all(abs(s - 1) < 0.05 for s in slopes.values()), slopes


@pytest.mark.slow
def test_gupnet_with_instance_term_trains(checkpoints: dict) -> None:
    distiller = load_distiller(
        "configs/monommkd.yaml", checkpoints, "distill.dualkl.instance_weight=0.5", model_type="gupnet"
    )
    batch = make_batch(seed=3)
    losses = distiller(batch)
    assert set(losses) & DISTILL_KEYS == {"dualkl", "dualkl_instance"}
    assert losses["dualkl"] > 0 and losses["dualkl_instance"] > 0
    slopes = gradient_slopes(distiller, batch, ["dualkl", "dualkl_instance", "total"])
    assert all(abs(s - 1) < 0.05 for s in slopes.values()), slopes


def test_trains_on_real_kitti_frames(kitti_sample: Path, checkpoints: dict) -> None:
    training = kitti_sample / "training"
    for frame in ("000000", "000001", "000002"):
        depth = build_depth_map(
            training / "velodyne" / f"{frame}.bin",
            training / "calib" / f"{frame}.txt",
            training / "image_2" / f"{frame}.png",
        )
        write_depth_map(training / "depth_dense" / f"{frame}.png", depth)
    cfg = tiny_config(
        "configs/monommkd.yaml",
        checkpoints,
        f"dataset.root_dir={kitti_sample}",
        "dataset.resolution=[256, 64]",
        "dataset.check_split_sizes=false",
        "distill.response_weight=1.0",
    )
    dataset = build_dataset(cfg, "trainval", train=False, load_depth=True)
    batch = default_collate([dataset[1], dataset[2]])  # the frames with cars (the config trains Car only)
    t = batch["targets"]
    assert t["mask_2d"].any() and t["rpd_mask"].any() and t["fg_mask"].any()
    torch.manual_seed(0)
    distiller = Distiller.from_config(cfg)
    _, names = train_steps(distiller, batch, steps=1)
    assert {"dualkl", "response", "depth_branch"} <= names
    with pytest.raises(ValueError, match="load_depth=True"):
        distiller({k: v for k, v in batch.items() if k != "depth"})


# ------------------------------------------------------------------------------ teacher handling
def test_teacher_frozen_in_eval_mode_and_outside_the_optimizer(checkpoints: dict) -> None:
    distiller = load_distiller("configs/monoskd.yaml", checkpoints, "distill.teacher_bn=eval")
    distiller.train()
    assert distiller.student.training and distiller.adapters.training
    assert not any(m.training for m in distiller.teacher.modules())
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    trainable = {id(p) for p in distiller.trainable_parameters()}
    assert not trainable & {id(p) for p in distiller.teacher.parameters()}
    assert {id(p) for p in distiller.adapters.parameters()} <= trainable
    names = [n for n, _ in distiller.named_trainable_parameters()]
    assert names and all(n.startswith(("student.", "adapters.")) for n in names)

    before = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    train_steps(distiller, make_batch(), steps=1)
    after = distiller.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert all(p.grad is None for p in distiller.teacher.parameters())
    assert all(p.grad is not None for p in distiller.adapters.parameters())


def test_teacher_bn_train_keeps_monoskd_behaviour(checkpoints: dict) -> None:
    distiller = load_distiller("configs/monoskd.yaml", checkpoints)  # teacher_bn: train (parity)
    distiller.train()
    assert distiller.teacher.training
    running = "backbone.bn1.running_mean"
    state = distiller.teacher.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    assert running in before
    train_steps(distiller, make_batch(), steps=1)
    after = distiller.teacher.state_dict()
    assert not torch.equal(before[running], after[running])  # batch statistics update the running stats
    weights = [n for n, _ in distiller.teacher.named_parameters()]
    assert all(torch.equal(before[k], after[k]) for k in weights)
    distiller.eval()
    assert not distiller.teacher.training and not distiller.student.training


def test_checkpoints_are_loaded(checkpoints: dict) -> None:
    distiller = load_distiller("configs/monommkd.yaml", checkpoints)
    teacher_file = torch.load(checkpoints["did"]["teacher"], weights_only=True)["model_state"]
    student_file = torch.load(checkpoints["did"]["student"], weights_only=True)["model_state"]
    assert all(torch.equal(v, teacher_file[k]) for k, v in distiller.teacher.state_dict().items())
    assert all(torch.equal(v, student_file[k]) for k, v in distiller.student.state_dict().items())


def test_missing_or_unset_teacher_checkpoint_is_named(checkpoints: dict, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "best.pth"
    with pytest.raises(FileNotFoundError, match=rf"distill\.teacher_checkpoint: .*{missing}"):
        load_distiller("configs/monommkd.yaml", checkpoints, f"distill.teacher_checkpoint={missing}")
    with pytest.raises(FileNotFoundError, match=rf"distill\.student_checkpoint: .*{missing}"):
        load_distiller("configs/monommkd.yaml", checkpoints, f"distill.student_checkpoint={missing}")
    with pytest.raises(ValueError, match=r"distill\.teacher_checkpoint is not set"):
        load_distiller("configs/monommkd.yaml", checkpoints, "distill.teacher_checkpoint=null")


def test_dualkl_needs_a_teacher_with_depth_branch(checkpoints: dict, tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "base.yaml", [*TINY, "model.depth_branch=false"])
    no_branch = tmp_path / "gupnet_style.pth"
    torch.save({"model_state": detector(cfg).state_dict()}, no_branch)
    with pytest.raises(ValueError, match="has no depth branch"):
        load_distiller("configs/monommkd.yaml", checkpoints, f"distill.teacher_checkpoint={no_branch}")
    # Without DualKL such a teacher is fine (MonoSKD-style baselines).
    load_distiller("configs/monoskd.yaml", checkpoints, f"distill.teacher_checkpoint={no_branch}")


# ------------------------------------------------------------------------------ state and wiring
def test_state_dict_layout_and_student_export(checkpoints: dict) -> None:
    distiller = load_distiller("configs/monoskd.yaml", checkpoints)
    prefixes = {k.split(".", 1)[0] for k in distiller.state_dict()}
    assert prefixes == {"student", "teacher", "adapters"}
    assert load_distiller("configs/monommkd.yaml", checkpoints).adapters is None
    assert [a[0].in_channels for a in distiller.adapters] == [64, 128, 256, 512]

    assert distiller.inference_detector() is distiller.student
    exported = distiller.student_state_dict()
    cfg = load_config(REPO / "configs" / "monoskd.yaml", TINY)
    plain = detector(cfg)
    plain.load_state_dict(exported, strict=True)
    batch = make_batch(seed=5)
    plain.eval()
    distiller.eval()
    with torch.no_grad():
        kwargs = {"calib": batch["calib"], "coord_range": batch["coord_range"], "topk": 5}
        a, b = plain(batch["rgb"], **kwargs), distiller.student(batch["rgb"], **kwargs)
    assert torch.equal(a["heatmap"], b["heatmap"]) and torch.equal(a["depth"], b["depth"])


def test_dualkl_term_uses_rpd_mask_and_fg_weight() -> None:
    cfg = load_config(REPO / "configs" / "base.yaml", TINY)
    torch.manual_seed(0)
    student, teacher = detector(cfg), sharpen_depth_branch(detector(cfg, input="depth"))
    batch = make_batch(seed=7)
    t = batch["targets"]
    kw = {"calib": batch["calib"], "coord_range": batch["coord_range"], "targets": t}
    with torch.no_grad():
        s_out, t_out = student(batch["rgb"], **kw), teacher(batch["depth"], **kw)

    def term(**dualkl: object) -> float:
        distiller = Distiller(student, teacher, criterion=criterion(cfg), settings=dualkl_on(**dualkl))
        return distiller.distill_losses(s_out, t_out, t)["dualkl"].item()

    def direct(weight: torch.Tensor, **changes: object) -> float:
        d = {**vars(BASE_DISTILL.dualkl), **changes}
        kw = {k: d[k] for k in ("temperature", "head_mass", "gamma", "mode")}
        return dual_kl_loss(s_out["depth_logits"], t_out["depth_logits"], weight, **kw).item()

    rpd, fg = t["rpd_mask"].float(), t["fg_mask"].float()
    assert 0 < fg.sum() < fg.numel() and 0 < rpd.sum() < rpd.numel()
    assert term(weight=2.0) == pytest.approx(2.0 * direct(rpd), rel=1e-6)
    assert term(weight=1.0, fg_weight=5.0) == pytest.approx(direct(rpd * (1 + 4 * fg)), rel=1e-6)
    assert term(weight=1.0, all_pixels=True) == pytest.approx(direct(torch.ones_like(rpd)), rel=1e-6)
    assert term(weight=1.0, mode="reverse", gamma=0.0) == pytest.approx(
        direct(rpd, mode="reverse", gamma=0.0), rel=1e-6
    )


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="distill.dualkl.mode"):
        replace(BASE_DISTILL.dualkl, mode="symmetric")
    with pytest.raises(ValueError, match="distill.teacher_bn"):
        replace(BASE_DISTILL, teacher_bn="frozen")
    with pytest.raises(ValueError, match="distill.affinity_weight must be >= 0"):
        replace(BASE_DISTILL, affinity_weight=-1.0)
    with pytest.raises(ValueError, match="distill.dualkl.head_mass"):
        replace(BASE_DISTILL.dualkl, head_mass=0.0)
    for override in ("distill.dualkl.mode=symmetric", "distill.feature_cells=all"):
        with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
            DistillSettings.from_config(load_config(REPO / "configs" / "base.yaml", [override]))
    cfg = load_config(REPO / "configs" / "base.yaml", [*TINY, "model.type=gupnet"])
    with pytest.raises(ValueError, match="same network"):
        Distiller(detector(cfg), detector(cfg, type="did"), criterion=criterion(cfg), settings=BASE_DISTILL)
    with pytest.raises(ValueError, match="needs the depth branch"):
        Distiller(
            detector(cfg, depth_branch=False),
            detector(cfg),
            criterion=criterion(cfg),
            settings=dualkl_on(weight=1.0),
        )


@pytest.mark.parametrize(
    ("config", "overrides", "heads"),
    [
        ("configs/monommkd.yaml", [], False),  # DualKL: depth logits only
        ("configs/monodistill.yaml", ["distill.response_weight=0"], False),  # features only
        ("configs/monodistill.yaml", [], True),  # the response term reads the heads
        ("configs/monommkd.yaml", ["distill.dualkl.instance_weight=1"], True),  # RoI depths
    ],
)
def test_teacher_runs_its_heads_only_when_a_term_reads_them(
    config: str, overrides: list[str], heads: bool, checkpoints: dict
) -> None:
    distiller = load_distiller(config, checkpoints, "distill.teacher_bn=eval", *overrides).eval()
    assert distiller.settings.teacher_needs_heads is heads
    batch = make_batch(seed=3)
    calls = []
    distiller.teacher.predict_3d = lambda *a, **k: (
        calls.append(1) or type(distiller.teacher).predict_3d(distiller.teacher, *a, **k)
    )
    with torch.no_grad():
        losses = distiller(batch)
        t = batch["targets"]
        kw = {"calib": batch["calib"], "coord_range": batch["coord_range"], "targets": t}
        full = distiller.teacher(batch["depth"], **kw)  # what the terms would see from a full forward
        student_out = distiller.student(batch["rgb"], **kw)
        expected = distiller.distill_losses(student_out, full, t)
    assert len(calls) == (2 if heads else 1)  # the explicit full forward above is 1
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=0, atol=0, msg=name)
    encoded = distiller.teacher.encode(batch["depth"])
    for a, b in zip(encoded["features"], full["features"], strict=True):
        assert torch.equal(a, b)
    assert encoded.keys() - {"features"} == full.keys() & {"depth_logits"}
    if "depth_logits" in full:
        assert torch.equal(encoded["depth_logits"], full["depth_logits"])
