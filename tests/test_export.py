"""`python -m sidestep.export` on an original-layout checkpoint whose widths are not the 2B model's: any checkpoint
exports, a stopped run exports its newest one, and `--merge` writes a complete variant folder that loads again."""

import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf
from peft import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sidestep import export
from sidestep.adapters.attach import adapter_config, add_adapter, save_adapter
from sidestep.adapters.files import read_adapter
from sidestep.config import as_container, resolve
from sidestep.models.keymap import diffusers_key_to_decoder
from sidestep.models.source import model_source
from sidestep.models.tiny import write_checkpoints
from sidestep.training import adapter_export
from sidestep.training.checkpoint import LORA_FILE, STATE_FILE
from tests.conftest import compose_cfg, dit_outputs, randomize_lora

CODE_FILE = "modeling_acestep_v15_turbo.py"  # the model code ACE-Step ships beside the weights


def original_checkpoint(cache_dir, root):
    """A tiny original-layout turbo folder, DiT 48 wide fed a 64-wide condition (as the XL variants: the two differ),
    stored in bf16 with a model code file, and a config.json without `encoder_hidden_size` (as the original's)."""
    tiny = compose_cfg(cache_dir, "model.arch.hidden_size=48", "model.arch.intermediate_size=96")
    folder = write_checkpoints(tiny.model, root, variant="turbo")
    weights = folder / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(weights).items()}, weights)
    (folder / CODE_FILE).write_text("# the original model code\n")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    """A run dir trained (LoRA dropout 0.1) on that checkpoint: saved config, final adapter, two checkpoints."""
    root = tmp_path_factory.mktemp("export")
    checkpoints = original_checkpoint(cache_dir, root / "checkpoints")
    cfg = resolve(compose_cfg(cache_dir, "model=turbo", f"model.checkpoint_dir={checkpoints}", "adapter.rank=4",
                              "adapter.alpha=8", "adapter.dropout=0.1", "run.name=jazz"))
    run_dir = root / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(as_container(cfg)))
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    model = randomize_lora(dit.transformer)
    save_adapter(model, run_dir / "adapter", cfg.run.name, cfg.export.dtype)
    lora = {k: v for k, v in load_file(run_dir / "adapter" / "adapter_model.safetensors").items()}
    for step, scale in ((3, 0.5), (5, 1.0)):
        folder = run_dir / "checkpoints" / f"step-{step:07d}"
        folder.mkdir(parents=True)
        save_file({k: v * scale for k, v in lora.items()}, folder / LORA_FILE)
        state = {"step": step, "epoch": 1, "batch_in_epoch": 0, "skipped_nonfinite": 0}
        (folder / STATE_FILE).write_text(json.dumps({"state": state, "scheduler": {}, "fingerprint": {}}))
    return cfg, run_dir, checkpoints / "acestep-v15-turbo"


def test_architecture_comes_from_the_checkpoint_not_the_yaml(run):
    cfg, _, _ = run
    arch = cfg.model.arch
    assert (arch.hidden_size, arch.encoder_hidden_size, arch.intermediate_size, arch.num_hidden_layers) == (48, 64, 96, 2)
    assert (arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim) == (4, 2, 16)


def test_a_checkpoint_exports_every_format_under_its_step_name(run):
    cfg, run_dir, _ = run
    checkpoint = run_dir / "checkpoints" / "step-0000003"
    export.main([str(checkpoint)])
    out = run_dir / "adapters" / "step-0000003"  # not inside the checkpoint: training prunes those
    formats = json.loads((out / "formats.json").read_text())
    assert set(formats) == {"diffusers", "diffusers_pipeline", "acestep", "comfyui"}
    assert formats["comfyui"]["path"] == "comfyui/jazz-step3.safetensors"
    weights, config = read_adapter(out)
    saved = load_file(checkpoint / LORA_FILE)
    assert weights.keys() == saved.keys() and all(torch.equal(weights[k], saved[k]) for k in saved)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.0)


def test_a_stopped_run_exports_its_newest_checkpoint(run, tmp_path):
    _, run_dir, _ = run
    stopped = tmp_path / "stopped"
    shutil.copytree(run_dir / ".hydra", stopped / ".hydra")
    shutil.copytree(run_dir / "checkpoints", stopped / "checkpoints", ignore=shutil.ignore_patterns("adapter"))
    export.main([str(stopped), "--format", "diffusers"])
    weights, _ = read_adapter(stopped / "adapter")
    newest = load_file(stopped / "checkpoints" / "step-0000005" / LORA_FILE)
    assert all(torch.equal(weights[k], newest[k]) for k in newest)


def test_export_of_a_folder_without_an_adapter_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        export.main([str(tmp_path)])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: source: ")


def test_merge_writes_a_complete_variant_folder_that_loads_as_base_plus_lora(run, tmp_path, cache_dir):
    cfg, run_dir, source = run
    export.main([str(run_dir), "--merge", "--format", "comfyui", "--out", str(tmp_path)])
    merged = tmp_path / "merged" / "acestep-v15-turbo-jazz"
    assert sorted(p.name for p in merged.iterdir()) == sorted(["config.json", "model.safetensors", "silence_latent.pt",
                                                               CODE_FILE])
    with safe_open(source / "model.safetensors", "pt") as a, safe_open(merged / "model.safetensors", "pt") as b:
        assert set(a.keys()) == set(b.keys())
        before = {k: a.get_tensor(k) for k in a.keys()}
        after = {k: b.get_tensor(k) for k in b.keys()}
    assert all(after[k].dtype == before[k].dtype == torch.bfloat16 for k in before)
    assert all(torch.equal(after[k], before[k]) for k in before if not k.startswith("decoder."))

    weights, _ = read_adapter(run_dir / "adapter")
    name = "layers.1.cross_attn.to_out.0"
    key = diffusers_key_to_decoder(f"{name}.weight")
    expected = before[key].float() + 2.0 * weights[f"{name}.lora_B.weight"] @ weights[f"{name}.lora_A.weight"]
    assert torch.allclose(after[key].float(), expected, rtol=0, atol=2e-3)  # a bf16 rounding of the sum
    assert not torch.allclose(after[key].float(), before[key].float(), rtol=0, atol=2e-3)
    untouched = diffusers_key_to_decoder("layers.0.mlp.up_proj.weight")
    assert torch.equal(after[untouched], before[untouched])

    reloaded = model_source(resolve(compose_cfg(cache_dir, "model=turbo", f"model.checkpoint_dir={merged}")).model).dit()
    base = model_source(cfg.model).dit().transformer
    base.load_lora_adapter(run_dir / "adapter", weight_name="adapter_model.safetensors", prefix=None)
    want, got, plain = dit_outputs(base), dit_outputs(reloaded.transformer), dit_outputs(model_source(cfg.model).dit().transformer)
    assert (got - want).abs().max() < 0.1 * (plain - want).abs().max()


def test_out_gets_the_runs_adapter_layout_whatever_the_formats(run, tmp_path):
    _, run_dir, _ = run
    tree = lambda folder: sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())  # noqa: E731
    export.main([str(run_dir), "--out", str(tmp_path / "all")])
    assert tree(tmp_path / "all") == tree(run_dir / "adapter")
    export.main([str(run_dir), "--out", str(tmp_path / "one"), "--format", "comfyui"])
    assert set(tree(tmp_path / "one")) == {"adapter_config.json", "adapter_model.safetensors", "formats.json",
                                           "README.md", "comfyui/jazz.safetensors"}
    listed = json.loads((tmp_path / "one" / "formats.json").read_text())
    assert {k: v["path"] for k, v in listed.items()} == {"comfyui": "comfyui/jazz.safetensors"}


@pytest.fixture(scope="module")
def bf16_run(run, tmp_path_factory):
    """A run with the default `export.dtype=bf16`: `adapter/` holds the trained weights rounded to bf16, its newest
    checkpoint (written at the last step, as training does) holds them as trained, in float32."""
    cfg, _, _ = run
    run_dir = tmp_path_factory.mktemp("bf16") / "run"
    saved = as_container(cfg)
    saved["export"]["dtype"] = "bf16"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    model = randomize_lora(dit.transformer, seed=3)
    save_adapter(model, run_dir / "adapter", cfg.run.name, "bf16")
    checkpoint = run_dir / "checkpoints" / "step-0000005"
    checkpoint.mkdir(parents=True)
    trained = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    save_file(trained, checkpoint / LORA_FILE)
    state = {"step": 5, "epoch": 1, "batch_in_epoch": 0, "skipped_nonfinite": 0}
    (checkpoint / STATE_FILE).write_text(json.dumps({"state": state, "scheduler": {}, "fingerprint": {}}))
    return run_dir, trained


def test_dtype_on_the_command_line_beats_the_runs_export_dtype(bf16_run, tmp_path):
    run_dir, _ = bf16_run
    export.main([str(run_dir), "--dtype", "fp16", "--format", "diffusers", "--out", str(tmp_path)])
    weights, _ = read_adapter(tmp_path)
    assert {v.dtype for v in weights.values()} == {torch.float16}
    assert json.loads((tmp_path / "formats.json").read_text())["diffusers"]["dtype"] == "fp16"


@pytest.mark.parametrize("source", [".", "adapter"])
def test_an_fp32_export_of_a_bf16_run_is_the_trained_weights_exactly(bf16_run, tmp_path, source, monkeypatch):
    """The run's adapter/ is bf16; `--dtype fp32` and `--merge` take the unrounded weights of its last checkpoint."""
    run_dir, trained = bf16_run
    merged = {}
    monkeypatch.setattr(adapter_export, "merge_into_variant", lambda _, weights, *rest: merged.update(weights) or tmp_path)
    export.main([str(run_dir / source), "--dtype", "fp32", "--out", str(tmp_path), "--merge"])
    for path in (tmp_path / "adapter_model.safetensors", tmp_path / "acestep" / "jazz" / "adapter_model.safetensors"):
        assert {v.dtype for v in load_file(path).values()} == {torch.float32}
    weights, _ = read_adapter(tmp_path)
    assert weights.keys() == trained.keys() == merged.keys()
    assert all(torch.equal(weights[k], trained[k]) and torch.equal(merged[k], trained[k]) for k in trained)
    comfy = load_file(tmp_path / "comfyui" / "jazz.safetensors")
    name = "diffusion_model." + diffusers_key_to_decoder("layers.0.self_attn.to_q.weight")[: -len(".weight")]
    assert torch.equal(comfy[f"{name}.lora_up.weight"], trained["layers.0.self_attn.to_q.lora_B.weight"])


def test_an_adapter_re_exported_from_another_checkpoint_is_not_mixed_up_with_the_newest(bf16_run, tmp_path):
    """Only a checkpoint whose weights round to the adapter's stands in for it."""
    run_dir, trained = bf16_run
    other = tmp_path / "run"
    shutil.copytree(run_dir, other)
    save_file({k: v * 0.5 for k, v in trained.items()}, other / "checkpoints" / "step-0000005" / LORA_FILE)
    export.main([str(other), "--dtype", "fp32", "--format", "diffusers", "--out", str(tmp_path / "out")])
    weights, _ = read_adapter(tmp_path / "out")
    assert all(torch.equal(weights[k], trained[k].to(torch.bfloat16).float()) for k in trained)


def test_continuing_a_run_keeps_what_was_exported_from_its_checkpoints(make_cfg, tmp_path, caplog):
    """Exports of a checkpoint live out of the checkpoints training prunes; an adapter an earlier version exported
    into a checkpoint is moved out before that checkpoint is deleted, and the log says where."""
    from sidestep.train import train_adapter

    steps = ("trainer.save_every_steps=1", "run.name=jazz")
    run_dir = tmp_path / "run"
    cfg = make_cfg(*steps, "trainer.max_steps=3", "trainer.keep_checkpoints=3")
    train_adapter(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(as_container(resolve(cfg))))
    first, second = (run_dir / "checkpoints" / f"step-000000{n}" for n in (1, 2))
    export.main([str(first), "--format", "diffusers"])
    shutil.copytree(run_dir / "adapter", second / "adapter")  # where earlier versions exported to
    kept = {n: load_file(c / LORA_FILE) for n, c in (("step-0000001", first), ("step-0000002", run_dir / "adapter"))}
    with pytest.raises(SystemExit):
        export.main([str(first), "--out", str(first / "adapter")])

    train_adapter(make_cfg(*steps, "trainer.max_steps=5", "trainer.keep_checkpoints=1", "resume_from=latest"), run_dir)
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-0000005"]
    for name, lora in kept.items():
        weights, _ = read_adapter(run_dir / "adapters" / name)
        assert all(torch.equal(weights[k], lora[k]) for k in lora), name
    assert f"moved the adapter exported into {second} to {run_dir / 'adapters' / 'step-0000002'}" in caplog.text


def test_the_line_naming_what_was_written_keeps_the_path_whole_and_as_typed(run, tmp_path):
    """Issue 27: `wrote ... (see <path>)` was folded before the path at the console's width, and a folder named
    with brackets lost them to rich's markup. The line names the path as given, on one line."""
    from sidestep.ui.console import console

    _, run_dir, _ = run
    out = tmp_path / ("deep-" * 30) / "[take 2]"
    with console.capture() as captured:
        width = console.width
        console.width = 80
        try:
            export.main([str(run_dir), "--out", str(out), "--format", "comfyui"])
        finally:
            console.width = width
    assert f"(see {out / 'formats.json'})" in captured.get().splitlines()[-1], captured.get()
