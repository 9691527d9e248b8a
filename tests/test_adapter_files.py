"""Each export loads the way its consumer loads it and gives the trained model's outputs (DESIGN §6)."""

import json
import re

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from sidestep.models.dit import build_dit
from sidestep.models.keymap import diffusers_key_to_decoder
from sidestep.training.adapter_files import original_module_name, read_adapter
from sidestep.training.lora import add_lora, save_adapter
from tests.conftest import dit_outputs, randomize_lora


@pytest.fixture
def trained(make_cfg, tmp_path):
    """A tiny DiT with non-trivial LoRA weights (alpha = 2 x rank, the case that loads at half strength when
    alpha is lost), MLP targets included, saved to tmp_path/adapter."""
    cfg = make_cfg("lora.rank=4", "lora.alpha=8", "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj]")
    dit = build_dit(cfg.model)
    add_lora(dit.transformer, cfg.lora, cfg.attention, seed=0)
    model = randomize_lora(dit.transformer)
    save_adapter(model, tmp_path / "adapter")
    return cfg, model, tmp_path / "adapter"


def test_acestep_ui_loads_the_original_named_peft_folder(trained):
    """ACE-Step's UI: PeftModel.from_pretrained(model.decoder, path) on a module tree with the original names."""
    cfg, model, adapter = trained
    base = build_dit(cfg.model).transformer

    class Attention(torch.nn.Module):
        def __init__(self, attn):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj, self.o_proj = attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]

    class Layer(torch.nn.Module):
        def __init__(self, block):
            super().__init__()
            self.self_attn, self.cross_attn, self.mlp = Attention(block.self_attn), Attention(block.cross_attn), block.mlp

    class Decoder(torch.nn.Module):  # ACE-Step's decoder names, the tiny model's weights
        def __init__(self, transformer):
            super().__init__()
            self.layers = torch.nn.ModuleList(Layer(b) for b in transformer.layers)

    decoder = PeftModel.from_pretrained(Decoder(base), adapter / "acestep").eval()
    config = json.loads((adapter / "acestep" / "adapter_config.json").read_text())
    assert "q_proj" in config["target_modules"] and "to_q" not in config["target_modules"]
    x = torch.randn(3, 64)
    trained_modules = dict(model.named_modules())
    with torch.no_grad():
        for name, module in decoder.base_model.model.named_modules():
            if hasattr(module, "lora_A"):
                diffusers_name = [k for k in trained_modules if original_module_name(k) == name]
                assert len(diffusers_name) == 1, name
                assert torch.allclose(module(x[:, :module.in_features]),
                                      trained_modules[diffusers_name[0]](x[:, :module.in_features]), atol=1e-6), name
    assert sum(1 for m in decoder.modules() if hasattr(m, "lora_A")) == 2 * (2 * 4 + 1)


def test_diffusers_pipeline_loader_applies_the_adapter_at_full_strength(trained):
    """What AceStepPipeline.load_lora_weights(dir) does, without building the whole pipeline."""
    from diffusers import AceStepPipeline

    cfg, model, adapter = trained
    fresh = build_dit(cfg.model).transformer.eval()
    state_dict, metadata = AceStepPipeline.lora_state_dict(str(adapter), return_lora_metadata=True)
    AceStepPipeline.load_lora_into_transformer(state_dict, transformer=fresh, metadata=metadata)
    assert torch.allclose(dit_outputs(fresh), dit_outputs(model), atol=1e-6)


def test_comfyui_file_follows_its_key_map_and_carries_alpha(trained):
    cfg, model, adapter = trained
    weights, config = read_adapter(adapter)
    comfy = load_file(adapter / "comfyui.safetensors")
    ups = [k for k in comfy if k.endswith(".lora_up.weight")]
    assert len(ups) == 18 and len([k for k in comfy if k.endswith(".alpha")]) == 18
    for up in ups:
        module = up[: -len(".lora_up.weight")]
        assert re.fullmatch(r"diffusion_model\.decoder\.layers\.\d+\.\w+\.\w+_proj", module), module
        down, alpha = comfy[f"{module}.lora_down.weight"], float(comfy[f"{module}.alpha"])
        delta = comfy[up] @ down * alpha / down.shape[0]  # how ComfyUI applies it
        diffusers_module = next(m for m, _ in model.named_modules()
                                if "diffusion_model.decoder." + original_module_name(m) == module)
        lora = dict(model.named_modules())[diffusers_module]
        expected = lora.lora_B["default"].weight @ lora.lora_A["default"].weight * lora.scaling["default"]
        assert torch.allclose(delta, expected, atol=1e-6)
        assert alpha == 8.0


def test_merge_equals_base_plus_scaled_lora(cli, trained, make_cfg, tmp_path, cache_dir):
    run = tmp_path / "run"
    proc = cli("experiment=demo", "trainer.max_steps=4", "lora.rank=4", "lora.alpha=8", "ui.yes=true",
               f"data.synthetic.cache_dir={cache_dir}", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = cli(str(run), "--merge", "--format", "comfyui", "--out", str(tmp_path / "out"), app="export")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "comfyui.safetensors").is_file()
    merged = load_file(tmp_path / "out" / "merged" / "model.safetensors")
    weights, _ = read_adapter(run / "adapter")
    base = build_dit(make_cfg().model).transformer.state_dict()
    name = "layers.1.cross_attn.to_out.0"
    expected = base[f"{name}.weight"] + 2.0 * weights[f"{name}.lora_B.weight"] @ weights[f"{name}.lora_A.weight"]
    assert torch.allclose(merged[diffusers_key_to_decoder(f"{name}.weight")], expected, atol=1e-6)
    untouched = "layers.0.mlp.up_proj.weight"
    assert torch.equal(merged[diffusers_key_to_decoder(untouched)], base[untouched])


def test_export_of_a_folder_without_an_adapter_is_one_line(cli, tmp_path):
    proc = cli(str(tmp_path), app="export")
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {tmp_path}: no adapter here")
