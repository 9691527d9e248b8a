"""LoRA lands on exactly the modules the config names, counts match the published numbers, and the written
adapter reproduces the trained model when loaded back."""

import json

import pytest
import torch
from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
from omegaconf import OmegaConf
from peft.tuners.lora import LoraLayer
from safetensors import safe_open

from sidestep.adapters.attach import adapter_config, add_adapter, save_adapter, trainable_parameters
from sidestep.adapters.targets import target_pattern
from sidestep.models.source import model_source
from tests.helpers.models import dit_outputs, randomize_lora


def lora_modules(model):
    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]


@pytest.mark.parametrize("attention, count", [("both", 16), ("self", 8), ("cross", 8)])
def test_attention_option_targets_the_right_modules_on_the_tiny_model(make_cfg, attention, count):
    cfg = make_cfg(f"attention={attention}")
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    names = lora_modules(dit.transformer)
    assert len(names) == count
    blocks = {"both": {"self_attn", "cross_attn"}, "self": {"self_attn"}, "cross": {"cross_attn"}}[attention]
    assert {n.split(".")[2] for n in names} == blocks
    assert {n.split(".", 3)[3] for n in names} == {"to_q", "to_k", "to_v", "to_out.0"}
    trainable = sum(p.numel() for p in dit.transformer.parameters() if p.requires_grad)
    assert trainable == trainable_parameters(cfg.model, adapter_config(cfg))
    assert all(p.dtype == torch.float32 for p in dit.transformer.parameters() if p.requires_grad)


@pytest.mark.parametrize("attention, count", [("both", 192), ("self", 96), ("cross", 96)])
def test_attention_option_module_counts_on_the_24_layer_dit(make_cfg, tmp_path, attention, count):
    import re

    cfg = make_cfg("model=turbo", f"model.checkpoint_dir={tmp_path}", f"attention={attention}")
    with torch.device("meta"):
        model = AceStepTransformer1DModel(**OmegaConf.to_container(cfg.model.arch))
    pattern = re.compile(target_pattern(cfg.adapter.target_modules, cfg.attention.blocks))
    assert sum(1 for name, _ in model.named_modules() if pattern.fullmatch(name)) == count


def test_trainable_parameters_match_side_steps_published_count(make_cfg, tmp_path):
    cfg = make_cfg("model=turbo", f"model.checkpoint_dir={tmp_path}", "adapter.rank=64")
    assert trainable_parameters(cfg.model, adapter_config(cfg)) == 44_040_192


def test_mlp_targets_are_layer_wide(make_cfg):
    cfg = make_cfg("attention=self", "adapter.target_modules=[q_proj,gate_proj,down_proj]")
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    assert sorted(lora_modules(dit.transformer)) == sorted(
        f"layers.{i}.{m}" for i in range(2) for m in ("self_attn.to_q", "mlp.gate_proj", "mlp.down_proj"))


def trained_tiny(cfg):
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    return randomize_lora(dit.transformer)


def test_saved_adapter_reproduces_the_trained_model_through_diffusers_loader(make_cfg, tmp_path):
    cfg = make_cfg("adapter.rank=4", "adapter.alpha=8")
    trained = trained_tiny(cfg)
    save_adapter(trained, tmp_path / "adapter", "jazz")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "README.md", "acestep", "adapter_config.json", "adapter_model.safetensors", "comfyui", "diffusers_pipeline",
        "formats.json"]
    fresh = model_source(cfg.model).dit().transformer.eval()
    assert not torch.allclose(dit_outputs(fresh), dit_outputs(trained))
    fresh.load_lora_adapter(tmp_path / "adapter", weight_name="adapter_model.safetensors", prefix=None)
    assert torch.allclose(dit_outputs(fresh), dit_outputs(trained), atol=1e-6)


def test_adapter_files_carry_rank_and_alpha_for_peft_and_diffusers(make_cfg, tmp_path):
    cfg = make_cfg("adapter.rank=4", "adapter.alpha=8")
    save_adapter(trained_tiny(cfg), tmp_path / "adapter", "jazz")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (4, 8, "LORA")
    with safe_open(tmp_path / "adapter" / "adapter_model.safetensors", "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert (meta["r"], meta["lora_alpha"]) == (4, 8)


def test_rewriting_an_adapter_never_leaves_a_partial_folder(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("adapter.rank=4")
    model = trained_tiny(cfg)
    save_adapter(model, tmp_path / "adapter", "jazz")
    before = (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save", crash)
    with pytest.raises(OSError):
        save_adapter(model, tmp_path / "adapter", "jazz")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_rslora_trains_at_alpha_over_the_square_root_of_the_rank(make_cfg):
    """`adapter.use_rslora=true`, rank 4, alpha 8: each adapted projection adds 8 / sqrt(4) = 4 x B A x, not 8 / 4."""
    cfg = make_cfg("adapter.use_rslora=true", "adapter.rank=4", "adapter.alpha=8")
    model = model_source(cfg.model).dit().transformer
    add_adapter(model, adapter_config(cfg), seed=0)
    randomize_lora(model)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    x = torch.randn(3, layers[0].in_features, generator=torch.Generator().manual_seed(0))
    for layer in layers[:2]:
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        with torch.no_grad():
            assert torch.allclose(layer(x) - layer.get_base_layer()(x), 4.0 * x @ a.T @ b.T, atol=1e-5)


def test_the_adapter_trains_in_float32_on_a_half_precision_base(make_cfg):
    cfg = make_cfg()
    model = model_source(cfg.model).dit(torch.bfloat16).transformer
    add_adapter(model, adapter_config(cfg), seed=0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert model.get_submodule("layers.0.self_attn.to_q").get_base_layer().weight.dtype == torch.bfloat16
