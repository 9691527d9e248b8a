"""ACE-Step 1.5 XL (`model=xl_turbo|xl_base|xl_sft`): a DiT wider than the condition it is fed, read from an
`acestep-v15-xl-*` folder in the XL's own layout (weights in shards with their index, a config.json naming the
condition's width apart from the DiT's), trained, sampled and exported, each export loaded by its client's loader."""

import json

import pytest
import torch
from omegaconf import OmegaConf
from peft import PeftModel
from safetensors.torch import load_file

from sidestep import export, tiny
from sidestep.config import as_container, resolve
from sidestep.errors import ConfigError
from sidestep.models.checkpoints import INDEX_FILE, locate, pick_variant
from sidestep.models.keymap import diffusers_key_to_decoder
from sidestep.models.source import model_source
from sidestep.models.tiny import TINY_XL_ARCH
from sidestep.training.memory import card_for, weight_bytes
from tests.conftest import compose_cfg, dit_outputs
from tests.test_adapter_files import Decoder, comfyui_patch

# ACE-Step 1.5 XL's DiT (DiffSynth-Studio's model config for acestep-v15-xl-base, ComfyUI loaders read off the
# weights): 4,168,897,088 parameters; with the 2048-wide condition encoder they make the 4 fp32 shards' ~20 GB
XL_DIT_PARAMETERS = 4_168_897_088


@pytest.fixture(scope="module")
def xl(tmp_path_factory, cache_dir):
    """A tiny XL-shaped turbo folder written by `python -m sidestep.tiny --variant xl-turbo`, and a run trained on
    it for 2 steps with a round of samples at the end."""
    from sidestep.train import train_adapter

    root = tmp_path_factory.mktemp("xl")
    checkpoints = root / "checkpoints"
    tiny.main([str(checkpoints), "--variant", "xl-turbo"])
    cfg = resolve(compose_cfg(cache_dir, "model=xl_turbo", f"model.checkpoint_dir={checkpoints}", "adapter.rank=4",
                              "adapter.alpha=8", "adapter.target_modules=[q_proj,k_proj,v_proj,o_proj,down_proj]",
                              "trainer.max_steps=2", "sample.every_n_steps=2", "sample.count=1", "sample.duration=1",
                              "run.name=xl"))
    (root / "run" / ".hydra").mkdir(parents=True)  # the record Hydra writes, that export reads
    (root / "run" / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(as_container(cfg)))
    result = train_adapter(cfg, root / "run")
    return cfg, checkpoints, root / "run", result


def hand_merged(cfg, adapter):
    """A fresh XL DiT with W + alpha / r * B @ A from the adapter's file written into each targeted weight."""
    merged = model_source(cfg.model).dit().transformer.eval()
    lora = load_file(adapter / "adapter_model.safetensors")
    config = json.loads((adapter / "adapter_config.json").read_text())
    weights = dict(merged.named_parameters())
    with torch.no_grad():
        for key in [k for k in lora if k.endswith(".lora_A.weight")]:
            module = key[:-len(".lora_A.weight")]
            delta = lora[f"{module}.lora_B.weight"] @ lora[key] * config["lora_alpha"] / config["r"]
            weights[f"{module}.weight"] += delta
    return merged


def test_the_xl_folder_settles_to_a_dit_wider_than_its_condition(xl):
    cfg, checkpoints, _, _ = xl
    folder = checkpoints / "acestep-v15-xl-turbo"
    assert (folder / INDEX_FILE).is_file() and not (folder / "model.safetensors").exists()
    arch = cfg.model.arch
    assert {k: arch[k] for k in TINY_XL_ARCH} == TINY_XL_ARCH and arch.encoder_hidden_size == 64 != arch.hidden_size
    assert cfg.model.variant == "xl-turbo" and cfg.model.is_turbo
    dit = model_source(cfg.model).dit()
    assert tuple(dit.transformer.condition_embedder.weight.shape) == (80, 64)  # the condition projected up to the DiT
    assert tuple(dit.null_condition_emb.shape) == (1, 1, 64)  # CFG dropout swaps the condition, at its own width


def test_an_xl_run_trains_samples_and_writes_every_export(xl):
    _, _, run, result = xl
    assert result.steps == 2
    assert sorted(p.suffix for p in (run / "samples" / "step-0000002").iterdir()) == [".json", ".wav"]
    formats = json.loads((run / "adapter" / "formats.json").read_text())
    assert set(formats) == {"diffusers", "diffusers_pipeline", "acestep", "comfyui"}


def test_the_diffusers_export_loads_into_an_xl_dit_at_its_trained_strength(xl):
    cfg, _, run, _ = xl
    merged = hand_merged(cfg, run / "adapter")
    fresh = model_source(cfg.model).dit().transformer
    fresh.load_lora_adapter(run / "adapter", weight_name="adapter_model.safetensors", prefix=None)
    assert not torch.equal(dit_outputs(fresh), dit_outputs(model_source(cfg.model).dit().transformer))
    assert torch.allclose(dit_outputs(fresh.eval()), dit_outputs(merged), atol=1e-5)


def test_the_comfyui_export_matches_every_key_of_the_xl_model(xl):
    cfg, _, run, _ = xl
    lora = load_file(run / "adapter" / "comfyui" / "xl.safetensors")
    base = model_source(cfg.model).dit().transformer.eval()
    comfy_model = {"diffusion_model." + diffusers_key_to_decoder(k): v for k, v in base.state_dict().items()}
    patched, used = comfyui_patch(comfy_model, lora)
    assert used == set(lora) and len(lora) == 3 * 3 * (2 * 4 + 1)  # 3 layers x (8 attention + down_proj) x up/down/alpha
    base.load_state_dict({k: patched["diffusion_model." + diffusers_key_to_decoder(k)] for k in base.state_dict()})
    assert torch.allclose(dit_outputs(base), dit_outputs(hand_merged(cfg, run / "adapter")), atol=1e-5)


def test_the_acestep_export_loads_with_peft_onto_the_xl_decoder(xl):
    cfg, _, run, _ = xl
    path = run / "adapter" / "acestep" / "xl"
    decoder = PeftModel.from_pretrained(Decoder(model_source(cfg.model).dit().transformer), path, adapter_name="xl")
    reference = dict(Decoder(hand_merged(cfg, run / "adapter")).named_modules())
    x = torch.randn(3, 160)
    loaded = 0
    with torch.no_grad():
        for name, module in decoder.eval().base_model.model.named_modules():
            if hasattr(module, "lora_A"):
                loaded += 1
                inputs = x[:, :module.in_features]
                assert torch.allclose(module(inputs), reference[name](inputs), atol=1e-5), name
    assert loaded == 3 * (2 * 4 + 1)


def test_merge_folds_the_adapter_into_a_loadable_xl_folder_from_its_shards(xl, tmp_path, cache_dir):
    cfg, checkpoints, run, _ = xl
    export.main([str(run), "--merge", "--format", "comfyui", "--out", str(tmp_path)])
    merged = tmp_path / "merged" / "acestep-v15-xl-turbo-xl"
    assert sorted(p.name for p in merged.iterdir()) == ["config.json", "model.safetensors", "silence_latent.pt"]
    source = resolve(compose_cfg(cache_dir, "model=xl_turbo", f"model.checkpoint_dir={merged}")).model
    assert source.arch.hidden_size == 80 and source.arch.encoder_hidden_size == 64
    assert torch.allclose(dit_outputs(model_source(source).dit().transformer),
                          dit_outputs(hand_merged(cfg, run / "adapter")), atol=1e-5)


def test_model_auto_finds_the_xl_variants_and_says_which_it_took(make_cfg, tmp_path, caplog):
    for variant in ("turbo", "base", "xl-turbo", "xl-base"):
        (tmp_path / f"acestep-v15-{variant}").mkdir()
        (tmp_path / f"acestep-v15-{variant}" / "config.json").write_text("{}")
    caplog.set_level("INFO")
    source = model_source(make_cfg("model=auto", f"model.checkpoint_dir={tmp_path}").model)
    assert source.cfg.variant == "xl-base" and source.folder.path.name == "acestep-v15-xl-base"
    assert "model=auto: training xl-base (found: base, turbo, xl-base, xl-turbo)" in caplog.text
    (tmp_path / "acestep-v15-xl-base" / "config.json").unlink()
    assert pick_variant(tmp_path) == "base"  # the non-distilled 2B before the distilled XL
    (tmp_path / "acestep-v15-base" / "config.json").unlink()
    assert pick_variant(tmp_path) == "xl-turbo"
    with pytest.raises(ConfigError, match=r"variants found: turbo, xl_turbo\); pick model=<one of them>"):
        locate(tmp_path, "xl-sft")


@pytest.mark.parametrize("option", ["xl_turbo", "xl_base", "xl_sft"])
def test_each_xl_option_composes_the_xl_shape_and_its_folder(make_cfg, option):
    cfg = make_cfg(f"model={option}", "model.checkpoint_dir=.", check=False)
    assert cfg.model.variant == option.replace("_", "-") and cfg.model.is_turbo == (option == "xl_turbo")
    arch = cfg.model.arch
    assert (arch.hidden_size, arch.encoder_hidden_size, arch.num_hidden_layers, arch.num_attention_heads) == (2560, 2048, 32, 32)
    assert weight_bytes(cfg.model, None, torch.bfloat16) == 2 * XL_DIT_PARAMETERS


def test_the_memory_model_names_the_smallest_card_a_run_fits():
    gib = 1024**3
    assert card_for(int(7.4 * gib)) == "8gb" and card_for(int(7.6 * gib)) == "12gb"  # half a GiB of CUDA context
    assert card_for(int(23.6 * gib)) is None
