"""Each export loads the way its consumer loads it and gives the outputs of a hand merge of the trained LoRA
(adapters/files.py). The adapter is trained with dropout 0.1, and no consumer here calls `.eval()` unless the real one does."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import load_file

from sidestep.adapters.attach import adapter_config, add_adapter, save_adapter
from sidestep.adapters.files import FORMATS
from sidestep.adapters.targets import original_module_name
from sidestep.models.keymap import diffusers_key_to_decoder
from sidestep.models.source import model_source
from tests.conftest import dit_outputs, randomize_lora

NAME = "jazz-v1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """A tiny DiT with non-trivial LoRA weights trained with dropout 0.1 (alpha = 2 x rank, the case that loads
    at half strength when alpha is lost; MLP targets included), saved as `<tmp>/adapter`, and the hand merge."""
    from tests.conftest import compose_cfg

    cfg = compose_cfg(cache_dir, "adapter.rank=4", "adapter.alpha=8", "adapter.dropout=0.1",
                      "adapter.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj]")
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    model = randomize_lora(dit.transformer)
    adapter = tmp_path_factory.mktemp("trained") / "adapter"
    save_adapter(model, adapter, NAME, "fp32")
    return cfg, model, adapter, hand_merged(cfg, model)


def hand_merged(cfg, model):
    """A fresh base DiT with W + alpha / r * B @ A written into each LoRA'd weight: no PEFT involved."""
    merged = model_source(cfg.model).dit().transformer.eval()
    weights = dict(merged.named_parameters())
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                delta = module.lora_B["default"].weight @ module.lora_A["default"].weight * module.scaling["default"]
                weights[f"{name}.weight"] += delta
    return merged


def test_diffusers_load_lora_adapter_without_eval_gives_the_merged_model_every_time(trained):
    cfg, _, adapter, merged = trained
    fresh = model_source(cfg.model).dit().transformer
    fresh.load_lora_adapter(adapter, weight_name="adapter_model.safetensors", prefix=None)
    assert fresh.training  # as diffusers leaves it: the LoRA dropout modules are in training mode
    first, second = dit_outputs(fresh), dit_outputs(fresh)
    assert torch.equal(first, second)
    assert torch.allclose(first, dit_outputs(merged), atol=1e-5)


def test_diffusers_pipeline_load_lora_weights_gives_the_merged_model(trained):
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler

    from sidestep.models import tiny

    cfg, _, adapter, merged = trained
    pipe = AceStepPipeline(vae=tiny.tiny_vae(cfg.model), text_encoder=tiny.tiny_text_encoder(cfg.model),
                           tokenizer=tiny.tiny_tokenizer(), transformer=model_source(cfg.model).dit().transformer,
                           condition_encoder=tiny.tiny_condition_encoder(cfg.model),
                           scheduler=FlowMatchEulerDiscreteScheduler())
    pipe.load_lora_weights(str(adapter / "diffusers_pipeline"))
    assert torch.equal(dit_outputs(pipe.transformer), dit_outputs(pipe.transformer))
    assert torch.allclose(dit_outputs(pipe.transformer), dit_outputs(merged), atol=1e-5)


class Attention(torch.nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]


class Layer(torch.nn.Module):
    def __init__(self, block):
        super().__init__()
        self.self_attn, self.cross_attn, self.mlp = Attention(block.self_attn), Attention(block.cross_attn), block.mlp


class Decoder(torch.nn.Module):
    """ACE-Step's decoder module names on the tiny model's weights."""

    def __init__(self, transformer):
        super().__init__()
        self.layers = torch.nn.ModuleList(Layer(b) for b in transformer.layers)


def test_acestep_loads_the_named_folder_as_a_second_adapter_under_its_own_name(trained, tmp_path):
    """ACE-Step's UI: PeftModel.from_pretrained(decoder, path, adapter_name=<folder name>), then load_adapter for
    the next one, which it refuses when the folder name is already taken."""
    cfg, model, adapter, merged = trained
    formats = json.loads((adapter / "formats.json").read_text())
    path = adapter / formats["acestep"]["path"]
    assert path.name == NAME == formats["acestep"]["adapter_name"]
    config = json.loads((path / "adapter_config.json").read_text())
    assert "q_proj" in config["target_modules"] and "to_q" not in config["target_modules"]
    base = model_source(cfg.model).dit().transformer
    decoder = PeftModel.from_pretrained(Decoder(base), path, adapter_name=path.name, is_trainable=False)
    other = tmp_path / "other"
    save_adapter(model, other, "jazz-v2", "fp32")
    decoder.load_adapter(other / "acestep" / "jazz-v2", adapter_name="jazz-v2")
    assert set(decoder.peft_config) == {NAME, "jazz-v2"}
    decoder.set_adapter(NAME)
    decoder.eval()
    reference = dict(Decoder(merged).named_modules())
    x = torch.randn(3, 128)
    loaded = 0
    with torch.no_grad():
        for name, module in decoder.base_model.model.named_modules():
            if hasattr(module, "lora_A"):
                loaded += 1
                inputs = x[:, :module.in_features]
                assert torch.allclose(module(inputs), reference[name](inputs), atol=1e-5), name
    assert loaded == 2 * (2 * 4 + 1)


def comfyui_patch(state_dict, lora, strength=1.0):
    """ComfyUI's LoRA rule for an ACE-Step 1.5 model, from its comfy/lora.py: a LoRA key is the model key
    `diffusion_model.decoder.<path>` without `.weight`, or `base_model.model.<path>`; up/down come from
    `<key>.lora_up/lora_down.weight` (or lora_B/lora_A); the scale is `<key>.alpha` / rank when that tensor
    exists, else 1. Returns the patched weights and the LoRA keys it used."""
    patched, used = dict(state_dict), set()
    for model_key in state_dict:
        if not (model_key.startswith("diffusion_model.decoder.") and model_key.endswith(".weight")):
            continue
        path = model_key[len("diffusion_model.decoder."):-len(".weight")]
        for key in (f"diffusion_model.decoder.{path}", f"base_model.model.{path}"):
            for up_name, down_name in ((".lora_up.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_A.weight")):
                if key + up_name in lora:
                    up, down = lora[key + up_name].float(), lora[key + down_name].float()
                    scale = lora[key + ".alpha"].item() / down.shape[0] if key + ".alpha" in lora else 1.0
                    patched[model_key] = patched[model_key] + strength * scale * (up @ down)
                    used |= {key + up_name, key + down_name, key + ".alpha"} & set(lora)
    return patched, used


def test_comfyui_file_loads_through_its_key_map_at_the_trained_strength(trained):
    cfg, _, adapter, merged = trained
    formats = json.loads((adapter / "formats.json").read_text())
    assert formats["comfyui"]["path"] == f"comfyui/{NAME}.safetensors"
    lora = load_file(adapter / formats["comfyui"]["path"])
    base = model_source(cfg.model).dit().transformer.eval()
    comfy_model = {"diffusion_model." + diffusers_key_to_decoder(k): v for k, v in base.state_dict().items()}
    patched, used = comfyui_patch(comfy_model, lora)
    assert used == set(lora)  # every tensor matched a model key: ComfyUI warns "lora key not loaded" otherwise
    back = {k: patched["diffusion_model." + diffusers_key_to_decoder(k)] for k in base.state_dict()}
    base.load_state_dict(back)
    assert torch.allclose(dit_outputs(base), dit_outputs(merged), atol=1e-5)


def test_comfyui_alpha_rule_needs_the_alpha_tensor(trained):
    """Guards the helper above: without `.alpha` ComfyUI's scale is 1, half of this adapter's alpha / rank = 2."""
    cfg, _, adapter, merged = trained
    lora = {k: v for k, v in load_file(adapter / "comfyui" / f"{NAME}.safetensors").items() if not k.endswith(".alpha")}
    base = model_source(cfg.model).dit().transformer.eval()
    comfy_model = {"diffusion_model." + diffusers_key_to_decoder(k): v for k, v in base.state_dict().items()}
    patched, _ = comfyui_patch(comfy_model, lora)
    base.load_state_dict({k: patched["diffusion_model." + diffusers_key_to_decoder(k)] for k in base.state_dict()})
    assert not torch.allclose(dit_outputs(base), dit_outputs(merged), atol=1e-3)


def test_formats_json_names_each_consumer_and_every_file_says_rank_alpha_targets_and_no_dropout(trained):
    _, _, adapter, _ = trained
    formats = json.loads((adapter / "formats.json").read_text())
    assert list(formats) == list(FORMATS)
    for consumer, entry in formats.items():
        assert (adapter / entry["path"]).exists(), consumer
        assert (entry["rank"], entry["alpha"], entry["dtype"]) == (4, 8, "fp32"), consumer
        assert "q_proj" in str(entry["target_modules"]) or "to_q" in str(entry["target_modules"]), consumer
    files = sorted(adapter.rglob("*.safetensors"))
    assert len(files) == 4
    for path in files:
        with safe_open(path, "pt") as f:
            header = f.metadata()
        assert (header["rank"], header["alpha"], header["lora_dropout"], header["name"]) == ("4", "8", "0", NAME), path
        assert "gate_proj" in header["target_modules"], path
        if "lora_adapter_metadata" in header:
            assert json.loads(header["lora_adapter_metadata"]).get("lora_dropout",
                   json.loads(header["lora_adapter_metadata"]).get("transformer.lora_dropout")) == 0.0, path
    for config in adapter.rglob("adapter_config.json"):
        assert json.loads(config.read_text())["lora_dropout"] == 0.0, config


def test_every_written_file_and_folder_is_readable_by_others(trained):
    _, _, adapter, _ = trained
    for root, dirs, files in os.walk(adapter):
        for name in dirs + files:
            mode = os.stat(Path(root) / name).st_mode
            assert mode & 0o004, f"{Path(root) / name}: mode {oct(mode)}"


def test_export_dtype_halves_the_files_and_keeps_alpha(trained, tmp_path):
    _, model, adapter, _ = trained
    save_adapter(model, tmp_path / "bf16", NAME, "bf16")
    for path in sorted(adapter.rglob("*.safetensors")):
        small = tmp_path / "bf16" / path.relative_to(adapter)
        tensors = load_file(small)
        assert all(v.dtype == torch.bfloat16 for k, v in tensors.items() if not k.endswith(".alpha")), small
        assert all(float(v) == 8.0 for k, v in tensors.items() if k.endswith(".alpha"))
        assert small.stat().st_size < 0.6 * path.stat().st_size, small


def test_comfyui_and_acestep_keys_are_the_original_module_names(trained):
    _, model, adapter, _ = trained
    comfy = load_file(adapter / "comfyui" / f"{NAME}.safetensors")
    ace = load_file(adapter / "acestep" / NAME / "adapter_model.safetensors")
    lora_modules = sorted(original_module_name(m) for m, mod in model.named_modules() if hasattr(mod, "lora_A")
                          and "default" in mod.lora_A)
    assert sorted(k[len("diffusion_model.decoder."):-len(".lora_up.weight")] for k in comfy
                  if k.endswith(".lora_up.weight")) == lora_modules
    assert sorted(k[len("base_model.model."):-len(".lora_B.weight")] for k in ace if k.endswith(".lora_B.weight")) == lora_modules
    assert all(re.fullmatch(r"layers\.\d+\.\w+\.\w+_proj", m) for m in lora_modules)
