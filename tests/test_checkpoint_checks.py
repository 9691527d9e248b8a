"""A checkpoint is trusted only after it is checked: damaged files are named, never trained on; `latest` passes
over a damaged newest checkpoint; a changed dataset or base model is a different run. Every shipped optimizer
resumes exactly, and a finished run continues to more steps as if it had never stopped."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sidestep.models.source import model_source
from sidestep.train import train_adapter
from sidestep.training import checkpoint as ckpt
from tests.test_resume import BASE, adapter, assert_same

SHORT = (*BASE[:-2], "trainer.max_steps=4", "trainer.save_every_steps=2", "trainer.keep_checkpoints=10")


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    from tests.conftest import compose_cfg

    folder = tmp_path_factory.mktemp("run")
    train_adapter(compose_cfg(cache_dir, *SHORT), folder)
    return folder


def copy_of(run, tmp_path, step=2):
    return shutil.copytree(run / "checkpoints" / f"step-{step:07d}", tmp_path / "checkpoints" / f"step-{step:07d}")


def as_older_sidestep(checkpoint):
    """Drop the content digests, as a checkpoint of an older Side-Step (so the checks behind them are reached)."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    del state["files"], state["digest"]
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))


def edit_lora(checkpoint, change):
    tensors = load_file(checkpoint / "adapter_model.safetensors")
    change(tensors)
    save_file(tensors, checkpoint / "adapter_model.safetensors")


def drop_first_lora_b(tensors):
    del tensors[next(k for k in sorted(tensors) if "lora_B" in k)]


def poison(tensors):
    tensors[sorted(tensors)[0]][0, 0] = float("nan")


def reshape(tensors):
    key = next(k for k in sorted(tensors) if "lora_A" in k)
    tensors[key] = torch.zeros(3, tensors[key].shape[1])


@pytest.mark.parametrize("damage, older, message", [
    (lambda c: edit_lora(c, drop_first_lora_b), False, r"adapter_model.safetensors: contents changed since it was saved"),
    (lambda c: edit_lora(c, drop_first_lora_b), True, r"adapter_model.safetensors: 1 LoRA tensor\(s\) missing, e.g. .*lora_B"),
    (lambda c: edit_lora(c, poison), True, r"adapter_model.safetensors: .* holds NaN or Inf"),
    (lambda c: edit_lora(c, reshape), True, r"adapter_model.safetensors: .*lora_A.* has shape \[3, 64\], this model needs"),
    (lambda c: (c / "optimizer.bin").unlink(), False, r"optimizer.bin: missing from the checkpoint"),
    (lambda c: (c / "trainer_state.json").write_text((c / "trainer_state.json").read_text().replace('"step": 2', '"step": 3')),
     False, r"trainer_state.json: edited after it was written"),
    (lambda c: (c / "trainer_state.json").write_text((c / "trainer_state.json").read_text().replace('"step": 2', '"step": "2"')),
     True, r"trainer_state.json: counters are not whole numbers >= 0 \(step\)"),
])
def test_a_damaged_checkpoint_is_named_in_one_line_and_never_trained_on(run, make_cfg, tmp_path, damage, older, message):
    checkpoint = copy_of(run, tmp_path)
    if older:
        as_older_sidestep(checkpoint)
    damage(checkpoint)
    with pytest.raises(ckpt.CheckpointError, match=message) as err:
        train_adapter(make_cfg(*SHORT, f"resume_from={checkpoint}"), tmp_path / "resumed")
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "resumed" / "adapter").exists()


def test_latest_passes_over_a_damaged_newest_checkpoint_and_says_so(run, make_cfg, tmp_path, caplog):
    for step in (2, 4):
        copy_of(run, tmp_path, step)
    newest = tmp_path / "checkpoints" / "step-0000004"
    edit_lora(newest, poison)
    caplog.set_level("WARNING")
    result = train_adapter(make_cfg(*SHORT, "resume_from=latest"), tmp_path)
    assert "passing over a damaged checkpoint" in caplog.text and "resuming from step-0000002" in caplog.text
    assert result.steps == 4 and len(result.step_seconds) == 2
    assert_same(adapter(run), adapter(tmp_path))


def test_latest_with_every_checkpoint_damaged_is_refused(run, make_cfg, tmp_path):
    (copy_of(run, tmp_path) / "optimizer.bin").unlink()
    with pytest.raises(ckpt.CheckpointError, match="all 1 checkpoints of .* are damaged, the newest: .*optimizer.bin"):
        train_adapter(make_cfg(*SHORT, "resume_from=latest"), tmp_path)


def test_changed_sample_contents_are_a_different_run(run, make_cfg, tmp_path, cache_dir):
    source = next(cache_dir.glob("synthetic-*"))
    data = shutil.copytree(source, tmp_path / "data")
    victim = sorted(data.glob("*.safetensors"))[0]
    with safe_open(victim, framework="pt") as f:
        tensors, header = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors["target_latents"] = tensors["target_latents"] + 0.5  # same name, same size, other music
    save_file(tensors, victim, metadata=header)
    assert victim.stat().st_size == (source / victim.name).stat().st_size
    checkpoint = copy_of(run, tmp_path)
    with pytest.raises(ckpt.CheckpointError, match=r"(?s)does not fit this run.*dataset: contents differ"):
        train_adapter(make_cfg(*SHORT, "data=tensors", f"data.dataset_dir={data}", f"resume_from={checkpoint}"),
                      tmp_path / "r")


def test_other_base_weights_are_a_different_run(make_cfg, tmp_path):
    from tests.test_checkpoints import real_cfg, write_original

    reference = model_source(make_cfg().model).dit()
    write_original(tmp_path / "a" / "acestep-v15-turbo", reference)
    with torch.no_grad():
        next(reference.transformer.parameters()).add_(1.0)  # same shapes and sizes, other weights
    write_original(tmp_path / "b" / "acestep-v15-turbo", reference)
    digests = [model_source(real_cfg(make_cfg, tmp_path / name).model).weights_digest() for name in ("a", "b", "a")]
    assert digests[0] == digests[2] != digests[1]
    assert model_source(make_cfg().model).weights_digest() != model_source(make_cfg("model.init_seed=1").model).weights_digest()


@pytest.mark.parametrize("optimizer", ["adamw", "prodigy", "adamw8bit", "adafactor"])
def test_every_shipped_optimizer_resumes_bit_identically(make_cfg, tmp_path, optimizer):
    settings = (*SHORT, f"optimizer={optimizer}")
    train_adapter(make_cfg(*settings), tmp_path / "full")
    state = torch.load(tmp_path / "full" / "checkpoints" / "step-0000002" / "optimizer.bin", weights_only=True)
    assert state["param_groups"]  # plain containers only: the safe loader opens it
    train_adapter(make_cfg(*settings, f"resume_from={tmp_path / 'full' / 'checkpoints' / 'step-0000002'}"), tmp_path / "cut")
    assert_same(adapter(tmp_path / "full"), adapter(tmp_path / "cut"))


def test_a_finished_run_leaves_a_final_checkpoint_and_continues_exactly(make_cfg, tmp_path):
    steady = (*BASE[:-1], "scheduler=constant", "trainer.save_every=1000")  # no checkpoint is due before the end
    train_adapter(make_cfg(*steady, "trainer.max_steps=10"), tmp_path / "full")
    train_adapter(make_cfg(*steady, "trainer.max_steps=6"), tmp_path / "ext")
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path / "ext")] == ["step-0000006"]
    result = train_adapter(make_cfg(*steady, "trainer.max_steps=10", "resume_from=latest"), tmp_path / "ext")
    assert result.steps == 10 and len(result.step_seconds) == 4
    assert_same(adapter(tmp_path / "full"), adapter(tmp_path / "ext"))
    assert ckpt.complete_checkpoints(tmp_path / "ext")[-1].name == "step-0000010"


@pytest.mark.parametrize("change", ["data.bucket_by_length=false", "data.crop_seconds=2.0"])
def test_a_resume_that_would_see_other_batches_is_refused_or_warned(run, make_cfg, tmp_path, caplog, change):
    checkpoint = copy_of(run, tmp_path)
    key = change.split("=")[0]
    with pytest.raises(ckpt.CheckpointError, match=rf"(?s)does not fit this run.*{key}: checkpoint has"):
        train_adapter(make_cfg(*SHORT, change, f"resume_from={checkpoint}"), tmp_path / "refused")
    assert not (tmp_path / "refused" / "adapter").exists()
    caplog.set_level("WARNING")
    result = train_adapter(make_cfg(*SHORT, change, "trainer.max_steps=1", "resume.strict=false", f"resume_from={checkpoint}"),
                           tmp_path / "warned")
    assert f"{key}: checkpoint has" in caplog.text and result.steps == 1 and len(result.step_seconds) == 1
