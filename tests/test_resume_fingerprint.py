"""A resume continues the same run or none: every setting that changes what a step sees is in the checkpoint's
fingerprint, and the rest is exempt with a reason; a new knob in the config fails here until it is put in one."""

import copy
import dataclasses

import pytest
from omegaconf import DictConfig, OmegaConf

from sidestep.training.fingerprint import COMPARED, NOT_COMPARED, mismatches, settings

# One change per compared setting: what a user could type on resume, expecting the run to go on "exactly".
CHANGES = {
    "model._target_": "sidestep.models.acestep.AceStepCheckpoint",
    "model.variant": "base",
    "model.arch": ("model.arch.sliding_window", 16),
    "model.is_turbo": True,
    "model.timestep_mu": 0.0,
    "model.timestep_sigma": 0.5,
    "model.quantize": "nf4",
    "adapter": ("adapter.use_rslora", True),
    "attention.blocks": ["self_attn"],
    "optimizer": ("optimizer.lr", 1e-4),
    "scheduler": ("scheduler.warmup_steps", 5),
    "timesteps": ("timesteps.cfg_ratio", 0.3),
    "data.crop_seconds": 2.0,
    "data.bucket_by_length": False,
    "data.val_fraction": 0.25,
    "trainer.batch_size": 2,
    "trainer.gradient_accumulation": 2,
    "trainer.seed": 7,
    "trainer.max_grad_norm": 0.5,
    "trainer.precision": "bf16",
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from tests.conftest import compose_cfg

    return compose_cfg(tmp_path_factory.mktemp("cache"))


def leaves(node, prefix=""):
    """Every setting's dotted path (a list is one setting)."""
    for key in node:
        path = f"{prefix}{key}"
        value = node._get_node(key)
        if isinstance(value, DictConfig) and not value._is_none():
            yield from leaves(value, f"{path}.")
        else:
            yield path


def covered(path, listed):
    parts = path.split(".")
    return any(".".join(parts[:n]) in listed for n in range(1, len(parts) + 1))


def test_every_setting_is_compared_or_exempt_with_a_reason(base):
    listed = set(COMPARED) | set(NOT_COMPARED)
    assert not set(COMPARED) & set(NOT_COMPARED)
    unplaced = [p for p in leaves(base) if not covered(p, listed)]
    assert not unplaced, f"put each in fingerprint.COMPARED (it changes what a step sees) or NOT_COMPARED: {unplaced}"
    paths = set(leaves(base))
    stale = [p for p in listed if not any(q == p or q.startswith(f"{p}.") for q in paths)]
    assert not stale, f"no such setting: {stale}"


def test_every_compared_setting_has_a_change_below():
    assert set(CHANGES) == set(COMPARED)


@pytest.mark.parametrize("path", CHANGES)
def test_changing_a_compared_setting_on_resume_is_a_different_run(base, path):
    key, value = CHANGES[path] if isinstance(CHANGES[path], tuple) else (path, CHANGES[path])
    changed = copy.deepcopy(base)
    OmegaConf.update(changed, key, value, merge=False)
    lines = mismatches(settings(base), settings(changed))
    assert len(lines) == 1 and lines[0].startswith(f"{key}: checkpoint has"), lines


@pytest.mark.parametrize("key, value", [("adapter.rank", 8), ("adapter.alpha", 8.0), ("adapter.dropout", 0.1),
                                        ("adapter.target_modules", ["q_proj"]), ("adapter.bias", "all")])
def test_changing_an_adapter_knob_on_resume_names_the_knob(base, key, value):
    changed = copy.deepcopy(base)
    OmegaConf.update(changed, key, value, merge=False)
    lines = mismatches(settings(base), settings(changed))
    assert len(lines) == 1 and lines[0].startswith(f"{key}: checkpoint has"), lines


def test_a_setting_an_older_checkpoint_did_not_record_is_a_difference(base):
    saved = settings(base)
    del saved["data.bucket_by_length"]
    assert mismatches(saved, settings(base)) == [
        "data.bucket_by_length: not recorded in the checkpoint (an older Side-Step wrote it), this run has True"]


def own_knobs():
    """(scheduler option, key, a changed value) for every knob of every schedule's schema, warm-up included."""
    from sidestep.config.parts import SCHEDULER_SCHEMAS

    for option, schema in SCHEDULER_SCHEMAS.items():
        for knob in dataclasses.fields(schema):
            if not knob.name.startswith("_"):
                yield option, f"scheduler.{knob.name}", knob.default + (1 if knob.type is int else 0.05)


@pytest.mark.parametrize("option, key, value", list(own_knobs()))
def test_every_knob_of_every_schedule_is_compared(tmp_path_factory, option, key, value):
    from tests.conftest import compose_cfg

    cfg = compose_cfg(tmp_path_factory.mktemp("cache"), f"scheduler={option}", check=False)
    changed = copy.deepcopy(cfg)
    OmegaConf.update(changed, key, value, merge=False)
    lines = mismatches(settings(cfg), settings(changed))
    assert len(lines) == 1 and lines[0].startswith(f"{key}: checkpoint has"), lines
