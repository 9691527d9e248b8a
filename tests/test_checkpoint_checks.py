"""A checkpoint is trusted only after it is checked: damaged files are named, never trained on; `latest` passes
over a damaged newest checkpoint; a changed dataset or base model is a different run. Every shipped optimizer
resumes exactly, and a finished run continues to more steps as if it had never stopped."""

import json
import re
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sidestep.models.source import model_source
from sidestep.train import train_adapter
from sidestep.training import checkpoint as ckpt
from sidestep.training.checkpoint_check import file_digests, payload_digest
from tests.helpers.options import options
from tests.helpers.runs import BASE, adapter, assert_same

SHORT = (*BASE[:-2], "trainer.max_steps=4", "trainer.save_every_steps=2", "trainer.keep_checkpoints=10")


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    from tests.helpers.configs import compose_cfg

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
    from tests.helpers.models import real_cfg, write_original

    reference = model_source(make_cfg().model).dit()
    write_original(tmp_path / "a" / "acestep-v15-turbo", reference)
    with torch.no_grad():
        next(reference.transformer.parameters()).add_(1.0)  # same shapes and sizes, other weights
    write_original(tmp_path / "b" / "acestep-v15-turbo", reference)
    digests = [model_source(real_cfg(make_cfg, tmp_path / name).model).weights_digest() for name in ("a", "b", "a")]
    assert digests[0] == digests[2] != digests[1]
    assert model_source(make_cfg().model).weights_digest() != model_source(make_cfg("model.init_seed=1").model).weights_digest()


@pytest.mark.parametrize("optimizer", options("optimizer"))
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


def reseal(checkpoint, edit=lambda payload: None):
    """The edit of someone who knows the format: the state changed by `edit`, then every digest recomputed."""
    path = checkpoint / "trainer_state.json"
    payload = json.loads(path.read_text())
    payload["files"] = file_digests(checkpoint)
    edit(payload)
    payload["digest"] = payload_digest(payload)
    path.write_text(json.dumps(payload))


def in_state(**fields):
    return lambda c: reseal(c, lambda p: p["state"].update(fields))


def in_payload(**fields):
    return lambda c: reseal(c, lambda p: p.update(fields))


def in_schedule(change):
    return lambda c: reseal(c, lambda p: change(p["scheduler"]))


def resealed_file(name, change):
    """A tensor file of the checkpoint rewritten by `change`, then resealed."""
    def tamper(checkpoint):
        path = checkpoint / name
        if path.suffix == ".safetensors":
            tensors = load_file(path)
            change(tensors)
            save_file(tensors, path)
        else:
            state = torch.load(path, weights_only=True)
            change(state)
            torch.save(state, path)
        reseal(checkpoint)
    return tamper


def symlinked_outside(checkpoint):
    outside = checkpoint.parent.parent / "elsewhere.bin"
    shutil.copy(checkpoint / "optimizer.bin", outside)
    (checkpoint / "optimizer.bin").unlink()
    (checkpoint / "optimizer.bin").symlink_to(outside)  # the same bytes: its digest still matches


def renamed_newer(checkpoint):
    checkpoint.rename(checkpoint.parent / "step-0000004")


def grow_first_moment(state):
    moments = next(s for s in state["state"].values() if "exp_avg" in s)
    moments["exp_avg"] = torch.zeros(3, 3)


def as_float64(tensors):
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].double()


def lying_header(tensors_path_checkpoint):
    path = tensors_path_checkpoint / "adapter_model.safetensors"
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    key = next(k for k in header if k != "__metadata__")
    header[key]["shape"] = [s * 2 for s in header[key]["shape"]]
    text = json.dumps(header).encode().ljust(size)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size:])
    reseal(tensors_path_checkpoint)


TAMPERED = {  # what was done to the checkpoint of step 2: (how, what the one line must say)
    "extra file": (lambda c: (c / "custom_checkpoint_0.pkl").write_bytes(b"x"), "custom_checkpoint_0.pkl: not part of the checkpoint"),
    "symlink to outside": (symlinked_outside, "optimizer.bin: a symlink \\(a checkpoint holds"),
    "renamed to a newer step": (renamed_newer, r"is the state of step 2, not of step-0000004"),
    "digest removed": (lambda c: (c / "trainer_state.json").write_text(
        json.dumps({k: v for k, v in json.loads((c / "trainer_state.json").read_text()).items() if k != "digest"})),
        "has one of 'files' and 'digest' without the other"),
    "truncated generators": (lambda c: (c / "generators_0.safetensors").write_bytes(
        (c / "generators_0.safetensors").read_bytes()[:100]), "generators_0.safetensors: contents changed"),
    "state nested deeply": (lambda c: (c / "trainer_state.json").write_text("[" * 100000 + "]" * 100000),
                            r"trainer_state.json: unreadable \(RecursionError"),
    "state huge": (lambda c: (c / "trainer_state.json").write_text(" " * (17 << 20)), r"unreadable \(ValueError: 17 MiB"),
    "state a list": (in_payload(state=[2, 1, 0]), "state is not what Side-Step writes"),
    "fingerprint a list": (in_payload(fingerprint=["x"]), "fingerprint is not what Side-Step writes"),
    "files a list": (in_payload(files=["optimizer.bin"]), "files is not what Side-Step writes"),
    "files outside": (lambda c: reseal(c, lambda p: p["files"].update({"../../outside.bin": "0" * 64})),
                      "lists '../../outside.bin', outside the checkpoint"),
    "scheduler a string": (in_payload(scheduler="cosine"), "scheduler is not what Side-Step writes"),
    "NaN loss": (in_state(smoothed_loss=float("nan")), "smoothed_loss is nan, not a finite number"),
    "text loss": (in_state(first_loss="low"), "first_loss is 'low', not a finite number"),
    "huge epoch": (in_state(epoch=10 ** 30), r"counters are not whole numbers >= 0 \(epoch\)"),
    "negative step": (in_state(step=-1), r"counters are not whole numbers >= 0 \(step\)"),
    "epoch past step": (in_state(epoch=9), "counters disagree"),
    "batch past the epoch": (in_state(batch_in_epoch=1000), "batch_in_epoch 1000 is past this run's"),
    "schedule moved": (in_schedule(lambda s: s.update(last_epoch=1)), "scheduler state is not this run's schedule at step 2"),
    "base rate doubled": (in_schedule(lambda s: s.update(base_lrs=[2 * r for r in s["base_lrs"]])), "not this run's schedule"),
    "schedule shape injected": (in_schedule(lambda s: s["lr_lambdas"][0].update(shape="evil")), "not this run's schedule"),
    "rate not a number": (in_schedule(lambda s: s.update(_last_lr=["fast"] * len(s["_last_lr"]))), "not this run's schedule"),
    "RNG state cut": (resealed_file("generators_0.safetensors", lambda t: t.update(noise=t["noise"][:100])),
                      r"generators_0.safetensors: random state noise is torch.uint8 \[100\]"),
    "RNG state missing": (resealed_file("generators_0.safetensors", lambda t: t.pop("timesteps")),
                          "random state timesteps is missing"),
    "LoRA in float64": (resealed_file("adapter_model.safetensors", as_float64), "is torch.float64, checkpoints hold torch.float32"),
    "LoRA header lies": (lying_header, r"adapter_model.safetensors: unreadable"),
    "optimizer moment reshaped": (resealed_file("optimizer.bin", grow_first_moment), r"optimizer.bin: state exp_avg has shape \[3, 3\]"),
    "optimizer weight decay edited": (resealed_file("optimizer.bin", lambda s: s["param_groups"][0].update(weight_decay=0.5)),
                                      "optimizer.bin: holds weight_decay 0.5, this run has 0.01"),
    "optimizer rate edited": (resealed_file("optimizer.bin", lambda s: s["param_groups"][0].update(lr=1.0)),
                              "optimizer.bin: holds lr 1.0, its schedule says"),
    "optimizer group dropped": (resealed_file("optimizer.bin", lambda s: s["param_groups"].append(dict(s["param_groups"][0]))),
                                r"optimizer or random state does not fit this run \(ValueError"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_checkpoint_is_refused_in_one_line(run, make_cfg, tmp_path, case):
    tamper, message = TAMPERED[case]
    tamper(copy_of(run, tmp_path))
    checkpoint = next((tmp_path / "checkpoints").iterdir())
    with pytest.raises(ckpt.CheckpointError) as err:
        train_adapter(make_cfg(*SHORT, f"resume_from={checkpoint}"), tmp_path / "resumed")
    assert re.search(message, str(err.value)) and len(str(err.value).splitlines()) == 1, err.value
    assert not (tmp_path / "resumed" / "adapter").exists()


def test_latest_never_follows_a_checkpoint_folder_symlinked_from_elsewhere(run, make_cfg, tmp_path):
    elsewhere = shutil.copytree(run / "checkpoints" / "step-0000002", tmp_path / "elsewhere")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-0000002").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ckpt.CheckpointError, match=r"all 1 checkpoints .* the newest: .*step-0000002: a symlink \("):
        train_adapter(make_cfg(*SHORT, "resume_from=latest"), tmp_path)
