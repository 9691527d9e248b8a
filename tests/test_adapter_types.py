"""Every adapter type (`adapter=dora|lokr|loha|oft`; LoRA in test_adapter_files.py): each export, loaded the way its
consumer loads it, gives the trained model's outputs, and the merged model equals the unmerged one."""

import copy
import json
from pathlib import Path

import pytest
import sidestep.conf
import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from sidestep.adapters.attach import adapter_config, add_adapter, save_adapter, trainable_parameters
from sidestep.adapters.files import read_adapter
from sidestep.adapters.merge import merge_into_variant
from sidestep.config import settled_config
from sidestep.config.overrides import check_overrides
from sidestep.errors import ConfigError
from sidestep.models.keymap import diffusers_key_to_decoder
from sidestep.models.source import model_source
from tests.helpers.configs import compose_cfg
from tests.helpers.models import Decoder, dit_outputs, randomize_lora
from tests.helpers.options import options

NAME = "jazz-v1"
TYPES = {  # type -> the formats it must list
    "dora": ["diffusers", "diffusers_pipeline", "acestep", "comfyui"],
    "lokr": ["diffusers", "acestep", "comfyui"],
    "loha": ["acestep", "comfyui"],
    "oft": ["acestep", "comfyui"],
}
CONF = Path(sidestep.conf.__file__).parent
SIZE = ("adapter.rank=4", "adapter.alpha=8", "adapter.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj]")


@pytest.fixture(scope="module", params=[kind for kind in options("adapter") if kind != "lora"])  # a new type: add it to TYPES
def trained(request, tmp_path_factory, cache_dir):
    """A tiny DiT with randomised (as if trained) adapter weights of one type, saved as `<tmp>/adapter`, and the
    trained model's outputs."""
    cfg = compose_cfg(cache_dir, f"adapter={request.param}", *SIZE)
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    model = randomize_lora(dit.transformer)
    adapter = tmp_path_factory.mktemp(request.param) / "adapter"
    save_adapter(model, adapter, NAME, "fp32")
    return request.param, cfg, adapter, dit_outputs(model)


def base_dit(cfg):
    return model_source(cfg.model).dit().transformer.eval()


def close(a, b):
    return torch.allclose(a, b, atol=2e-5)


def test_formats_json_lists_exactly_the_consumers_that_load_the_type(trained):
    kind, _, adapter, _ = trained
    formats = json.loads((adapter / "formats.json").read_text())
    assert list(formats) == TYPES[kind]
    assert all((adapter / entry["path"]).exists() for entry in formats.values())


def test_the_trainable_count_shown_before_training_is_what_the_file_holds(trained):
    _, cfg, adapter, _ = trained
    assert trainable_parameters(cfg.model, adapter_config(cfg)) == sum(t.numel() for t in load_file(adapter / "adapter_model.safetensors").values())


def test_side_step_reads_its_own_copy_back_as_sample_does(trained):
    _, cfg, adapter, reference = trained
    weights, config = read_adapter(adapter)
    model = base_dit(cfg)
    model.add_adapter(config)
    assert not set_peft_model_state_dict(model, weights).unexpected_keys
    assert close(dit_outputs(model.eval()), reference)


def test_acestep_peft_folder_loads_under_the_original_names(trained):
    """ACE-Step's UI: PeftModel.from_pretrained(decoder, <adapter>/acestep/<name>, adapter_name=<name>)."""
    _, cfg, adapter, reference = trained
    base = base_dit(cfg)
    path = adapter / json.loads((adapter / "formats.json").read_text())["acestep"]["path"]
    decoder = PeftModel.from_pretrained(Decoder(base), path, adapter_name=path.name, is_trainable=False)
    for layer, block in zip(decoder.base_model.model.layers, base.layers):  # the adapted projections, back in the DiT
        for name in ("self_attn", "cross_attn"):
            ours, theirs = getattr(layer, name), getattr(block, name)
            theirs.to_q, theirs.to_k, theirs.to_v, theirs.to_out[0] = ours.q_proj, ours.k_proj, ours.v_proj, ours.o_proj
    assert close(dit_outputs(base.eval()), reference)


def comfyui_weight(weight, x, lora, used):
    """ComfyUI's rule for the patch of model weight `<x>.weight` at strength 1 (comfy/lora.py `load_lora` and
    comfy/weight_adapter/{lora,lokr,loha}.py, `base.weight_decompose`; `diff` is added as it is), in float32 as
    ComfyUI's model patcher does. None when no tensor of the file names `x`."""
    present = {k[len(x) + 1:]: v.float() for k, v in lora.items() if k.startswith(x + ".")}
    if not present:
        return None
    used |= {f"{x}.{k}" for k in present}
    alpha = present["alpha"].item() if "alpha" in present else None
    w = weight.float()
    if "lora_up.weight" in present:
        up, down = present["lora_up.weight"], present["lora_down.weight"]
        calc = w + (alpha / down.shape[0] if alpha is not None else 1.0) * (up @ down)
        if "dora_scale" not in present:
            return calc
        scale = present["dora_scale"]
        assert scale.shape == (w.shape[0], 1)  # ComfyUI's output-axis case: the base weight's row norms
        return calc * (scale / (w.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps))
    if "hada_w1_a" in present:
        p = present
        scale = alpha / p["hada_w1_b"].shape[0] if alpha is not None else 1.0
        return w + scale * (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
    if any(k.startswith("lokr_") for k in present):
        dim = None
        factors = []
        for n in ("1", "2"):
            if f"lokr_w{n}" in present:
                factors.append(present[f"lokr_w{n}"])
            else:
                factors.append(present[f"lokr_w{n}_a"] @ present[f"lokr_w{n}_b"])
                dim = present[f"lokr_w{n}_b"].shape[0]
        scale = alpha / dim if alpha is not None and dim is not None else 1.0
        return w + scale * torch.kron(*factors).reshape(w.shape)
    return w + present["diff"]


def test_comfyui_file_patches_the_base_model_into_the_trained_one(trained):
    _, cfg, adapter, reference = trained
    lora = load_file(adapter / "comfyui" / f"{NAME}.safetensors")
    base = base_dit(cfg)
    used, state = set(), base.state_dict()
    for key, weight in state.items():
        x = "diffusion_model." + diffusers_key_to_decoder(key)[: -len(".weight")]
        patched = comfyui_weight(weight, x, lora, used) if key.endswith(".weight") else None
        if patched is not None:
            state[key] = patched
    assert used == set(lora)  # ComfyUI warns "lora key not loaded" for any other
    base.load_state_dict(state)
    assert close(dit_outputs(base), reference)


def test_formats_json_lists_diffusers_exactly_when_its_loader_gives_the_trained_model(trained):
    """diffusers' own `load_lora_adapter`, as the diffusers entry of formats.json says to call it."""
    kind, cfg, adapter, reference = trained
    listed = "diffusers" in json.loads((adapter / "formats.json").read_text())
    model = model_source(cfg.model).dit().transformer
    try:
        model.load_lora_adapter(adapter, weight_name="adapter_model.safetensors", prefix=None)
    except (TypeError, ValueError):  # LoHa, OFT: it builds a LoraConfig from their header, which cannot take it
        assert not listed
        return
    assert listed and close(dit_outputs(model.eval()), reference)


def test_merged_variant_folder_equals_the_unmerged_model(trained, tmp_path, cache_dir):
    _, cfg, adapter, reference = trained
    weights, config = read_adapter(adapter)
    merged = merge_into_variant(model_source(cfg.model), weights, config, tmp_path, NAME)
    reloaded = settled_config(compose_cfg(cache_dir, "model=turbo", f"model.checkpoint_dir={merged}"))[1]
    assert close(dit_outputs(reloaded.dit().transformer), reference)


def test_export_outside_a_run_leaves_out_a_comfyui_file_that_needs_the_base_model(trained, tmp_path):
    """DoRA's and OFT's ComfyUI files are computed from the base weights; without the run's model there are none."""
    from sidestep import export

    kind, _, adapter, _ = trained
    export.main([str(adapter), "--out", str(tmp_path)])
    listed = list(json.loads((tmp_path / "formats.json").read_text()))
    assert listed == [f for f in TYPES[kind] if f != "comfyui" or kind not in ("dora", "oft")]
    assert (tmp_path / "comfyui").exists() == ("comfyui" in listed)


def test_oft_refuses_another_strength_in_one_line_before_loading_a_model(trained, cli):
    kind, _, adapter, _ = trained
    if kind != "oft":
        pytest.skip("PEFT scales every other type")
    proc = cli(f"source={adapter}", "prompt=jazz", "strength=0.5", app="sample")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: strength: an OFT adapter plays at strength 1 only (PEFT cannot scale it); leave strength=1 and "
        "compare_strengths empty"), proc.stderr[-2000:]


@pytest.mark.parametrize("kind, override", [("loha", "adapter.rank_map=estimate.json"), ("lokr", "adapter.bias=all"),
                                            ("oft", "adapter.rank=16"), ("oft", "lora.dropout=0.1")])
def test_a_knob_its_type_lacks_is_refused_in_one_line_before_composing(kind, override):
    """Per-module ranks are LoRA's and DoRA's, biases LoRA's, a rank not OFT's: the knob does not exist there."""
    key = override.split("=")[0].replace("lora.", "adapter.")
    with pytest.raises(ConfigError, match=rf"^{key}: adapter={kind} has no {key[8:]}; its knobs are adapter\."):
        check_overrides([f"adapter={kind}", override], CONF)


@pytest.mark.parametrize("override, option", [
    ("adapter.block_size=24", "adapter.block_size"),
    ("adapter.factor=0", "adapter.factor"),
])
def test_bad_knobs_are_refused_before_any_model_loads(make_cfg, override, option):
    kind = {"adapter.block_size": "oft"}.get(option, "lokr")
    with pytest.raises(ConfigError, match=f"^{option}: "):
        make_cfg(f"adapter={kind}", override)


def nudged(cfg) -> torch.nn.Module:
    """The tiny DiT with an adapter a short training could leave: every adapter tensor moved a little from its
    start (DoRA's magnitude, which starts at the base rows' norms, by about 1 %); in eval mode."""
    model = model_source(cfg.model).dit().transformer
    add_adapter(model, adapter_config(cfg), seed=0)
    gen = torch.Generator().manual_seed(1)
    for name, param in model.named_parameters():
        if param.requires_grad:
            noise = 0.01 * torch.randn(param.shape, generator=gen)
            param.data = param.data * (1 + noise) if "magnitude" in name else param.data + noise
    return model.eval()


def merged_weights(model: torch.nn.Module) -> dict:
    merged = copy.deepcopy(model)
    merged.fuse_lora()
    merged.unload_lora()
    return merged.state_dict()


@pytest.mark.parametrize("adapter", [*options("adapter"), "lora adapter.use_rslora=true"])
def test_a_bf16_export_plays_the_trained_change_within_1_percent(adapter, tmp_path, cache_dir):
    """The default `export.dtype=bf16` rounds each tensor by up to 0.4 %; a tensor near the base weights' scale
    (DoRA's magnitude, ComfyUI's `dora_scale`) rounded so would move each weight by 0.4 % of itself, several percent
    of a small trained change. Measured as max |W_file - W_trained| / max |W_trained - W_base| per target, for
    ComfyUI's patch rule and for PEFT loading Side-Step's own copy (what diffusers and ACE-Step load). rsLoRA: ComfyUI
    scales by alpha / rank, so the file's alpha must be the one that gives alpha / sqrt(rank)."""
    kind, *knobs = adapter.split()
    cfg = compose_cfg(cache_dir, f"adapter={kind}", *knobs, *SIZE)
    model = nudged(cfg)
    save_adapter(model, tmp_path, NAME, "bf16")
    base, trained = base_dit(cfg).state_dict(), merged_weights(model)
    weights, config = read_adapter(tmp_path)
    peft = base_dit(cfg)
    peft.add_adapter(config)
    set_peft_model_state_dict(peft, weights)
    loaded = merged_weights(peft)
    lora = load_file(tmp_path / "comfyui" / f"{NAME}.safetensors")
    errors = {"comfyui": [], "peft": []}
    for key, weight in base.items():
        x = "diffusion_model." + diffusers_key_to_decoder(key)[: -len(".weight")]
        comfy = comfyui_weight(weight, x, lora, set()) if key.endswith(".weight") else None
        if comfy is None:
            continue
        change = (trained[key] - weight).abs().max()
        errors["comfyui"].append(float((comfy - trained[key]).abs().max() / change))
        errors["peft"].append(float((loaded[key] - trained[key]).abs().max() / change))
    assert errors["comfyui"] and max(errors["comfyui"]) < 0.01 and max(errors["peft"]) < 0.01, errors
