"""ddmini.config: every numeric field of every stage's config is checked once, here, for type,
finiteness and range, so every command and API entry point inherits the same refusals."""

import math
from dataclasses import fields

import pytest

from ddmini.config import (
    AttackConfig,
    ClassifierConfig,
    DiffusionTrainConfig,
    HardenConfig,
    RunConfig,
    SampleConfig,
    UNetConfig,
)
from ddmini.presets import PRESETS, preset

CONFIGS = [ClassifierConfig, UNetConfig, DiffusionTrainConfig, SampleConfig, AttackConfig, RunConfig, HardenConfig]
# Strings that are not one of a list, checked by their config's validate(): the attack's target (shift, random or
# any class index K).
FREE_FORM = {("AttackConfig", "target")}


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_knob_is_declared_once_with_help_and_bounds_or_choices(cls):
    obj = cls()
    for f in fields(cls):
        v = getattr(obj, f.name)
        if hasattr(v, "__dataclass_fields__"):
            continue
        meta = f.metadata
        assert meta.get("help"), f"{cls.__name__}.{f.name} has no help text"
        if isinstance(v, str) and (cls.__name__, f.name) not in FREE_FORM:
            assert meta.get("choices") and v in meta["choices"], f"{cls.__name__}.{f.name} has no choices"
        elif not isinstance(v, bool) and (isinstance(v, (int, float, tuple)) or v is None):
            assert meta.get("bounds") is not None, f"{cls.__name__}.{f.name} has no bounds"


@pytest.mark.parametrize("cls", CONFIGS)
def test_defaults_and_presets_validate(cls):
    cls().validate()
    for name in PRESETS:
        preset(name).validate()


def test_paper_short_is_the_gpu_lease_recipe():
    """bench/gpu_check.sh's runs (README's H200 figures) used these 13 flags on the paper preset."""
    p, paper = preset("paper-short"), preset("paper")
    t = p.train
    assert (t.steps, t.time_budget, t.batch_size, t.lr, t.warmup, t.ema_decay, t.lr_schedule, t.checkpoint_every) == (
        4500,
        5.5,
        256,
        5e-4,
        500,
        0.999,
        "cosine",
        2000,
    )
    assert (p.num_samples, p.sample.steps, p.sample.batch_size, p.attack.batch_size) == (1000, 50, 1000, 2048)
    assert p.unet == paper.unet and p.classifier == paper.classifier and p.only_successful


@pytest.mark.parametrize(
    "cls, field, value, msg",
    [
        (DiffusionTrainConfig, "grad_clip", math.nan, "grad_clip must be a finite number"),
        (DiffusionTrainConfig, "time_budget", math.nan, "time_budget must be a finite number"),
        (DiffusionTrainConfig, "lr", 0.0, "lr must be in (0, 1]"),
        (DiffusionTrainConfig, "steps", 2.5, "steps must be an integer"),
        (DiffusionTrainConfig, "steps", True, "steps must be an integer"),
        (DiffusionTrainConfig, "ema_decay", 1.0, "ema_decay must be in [0, 1)"),
        (DiffusionTrainConfig, "seed", 2**64, "seed must be in [0, 9223372036854775807]"),
        (DiffusionTrainConfig, "seed", -1, "seed must be in"),
        (UNetConfig, "channel_mult", (1.5, 2), "channel_mult must be an integer; got 1.5"),
        (UNetConfig, "channel_mult", (), "channel_mult must be a non-empty list"),
        (UNetConfig, "groups", 0, "groups must be in [1, 1024]"),
        (UNetConfig, "num_heads", 0, "num_heads must be in [1, 64]"),
        (UNetConfig, "dropout", 1.0, "dropout must be in [0, 1)"),
        (SampleConfig, "guidance", math.inf, "guidance must be a finite number"),
        (SampleConfig, "guidance", 1e30, "guidance must be in [0, 100]"),
        (SampleConfig, "eta", math.inf, "eta must be a finite number"),
        (SampleConfig, "steps", 0, "steps must be in [1, 100000]"),
        (AttackConfig, "steps", 10**20, "steps must be in [1, 100000]"),
        (AttackConfig, "eps", math.nan, "eps must be a finite number"),
        (AttackConfig, "alpha", -1.0, "alpha must be in [0, 1000]"),
        (AttackConfig, "eps", "1.6", "eps must be a finite number"),
        (ClassifierConfig, "width", 0, "width must be in [1, 1024]"),
        (RunConfig, "guidance_scales", (1.0, math.inf), "guidance_scales must be a finite number"),
        (RunConfig, "num_samples", 0, "num_samples must be in"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(cls, field, value, msg):
    obj = cls()
    setattr(obj, field, value)
    with pytest.raises(ValueError) as e:
        obj.validate()
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_whole_floats_become_ints_and_ints_stay():
    u = UNetConfig(channel_mult=(1.0, 2.0, 2.0), base_channels=16.0).validate()
    assert u.channel_mult == (1, 2, 2) and isinstance(u.base_channels, int)
    assert DiffusionTrainConfig(lr=1).validate().lr == 1


def test_alpha_none_is_allowed():
    assert AttackConfig(alpha=None).validate().step_size == pytest.approx(2.5 * 1.6 / 10)


# The cache keys of every preset's stage configs as they were when the README's runs were made (taken
# from the code of 2026-12-01 before the config checks were added): a change that moves one makes every
# cached MNIST run recompute, which must be deliberate (and said in README), never a side effect.
EXISTING_KEYS = {
    "smoke": {
        "classifier": "92d8fde056fe4b4c",
        "attack": "05903035792edc0a",
        "unet": "7e20ac98259e8bcf",
        "train": "3133daf83057468f",
        "sample": "f18d7df3055dab14",
    },
    "cpu": {
        "classifier": "182ba558ab390fac",
        "attack": "1b1dbbe31d7791a2",
        "unet": "f689db83dd3d397a",
        "train": "8598e883211f995c",
        "sample": "dfcb0e2aca69133b",
    },
    "paper": {
        "classifier": "182ba558ab390fac",
        "attack": "1b1dbbe31d7791a2",
        "unet": "cef483219bb9b311",
        "train": "9940ec0ebd96eddc",
        "sample": "1cbbd5d260a5d6ad",
    },
}


@pytest.mark.parametrize("name", sorted(EXISTING_KEYS))
def test_cache_keys_of_existing_runs_are_stable(name):
    from ddmini.checkpoint import fingerprint
    from ddmini.config import key_dict

    p = preset(name).validate()
    assert {s: fingerprint(key_dict(getattr(p, s))) for s in p.SECTIONS} == EXISTING_KEYS[name]


def test_report_folders_name_the_dataset_and_attack_but_keep_mnist_pgd_l2s():
    from dataclasses import replace

    def folder(p=0.3, dataset="mnist", attack="pgd_l2", what=None):
        cfg = RunConfig(poison=p, dataset=dataset)
        return replace(cfg, attack=replace(cfg.attack, attack=attack)).folder(what)

    assert folder() == "p0.3" and folder(1) == "p1" and folder(what="sweep") == "sweep"  # as before: existing runs
    assert folder(1, attack="fgsm") == "p1-fgsm" and folder(dataset="fashion-mnist") == "fashion-mnist-p0.3"
    assert folder(dataset="cifar10", attack="cw_l2", what="sweep") == "cifar10-sweep-cw_l2"
    names = {folder(1, d, a) for d in ("mnist", "fashion-mnist", "cifar10") for a in ("pgd_l2", "fgsm", "cw_l2")}
    assert len(names) == 9  # runs sharing a run dir never write into one folder
