"""An adapter trained with `adapter.rank_map` (a different rank, and alpha = ratio x rank, per module: PEFT's
rank_pattern / alpha_pattern) exports at each module's own strength: in ComfyUI's file, in the merged DiT, in the
diffusers files and in ACE-Step's PEFT folder. Tested on the files, by the rule each consumer applies."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sidestep.adapters.attach import adapter_config, add_adapter, save_adapter
from sidestep.config import as_container
from sidestep.models.keymap import diffusers_key_to_decoder
from sidestep.models.source import model_source
from tests.conftest import dit_outputs, randomize_lora

RANKS = (2, 4, 8, 0)  # cycled over the attention projections; 0 = left out
ATTENTION_PROJECTION = re.compile(r"layers\.\d+\.(self|cross)_attn\.(to_q|to_k|to_v|to_out\.0)")
NAME = "rankmap"
RATIO = 3.0  # adapter.alpha / adapter.rank below: every module gets alpha = 3 x its rank, not adapter.alpha = 12


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    """A run dir (.hydra/config.yaml + adapter/) of a tiny DiT with a rank map and non-trivial LoRA weights."""
    from tests.conftest import compose_cfg

    root = tmp_path_factory.mktemp("rank_map_run")
    base = model_source(compose_cfg(cache_dir).model).dit().transformer
    linears = [(n, m) for n, m in base.named_modules() if ATTENTION_PROJECTION.fullmatch(n)]
    modules = {name: {"rank": RANKS[i % len(RANKS)], "in_features": m.in_features, "out_features": m.out_features}
               for i, (name, m) in enumerate(linears)}
    rank_map = root / "estimate.json"
    cfg = compose_cfg(cache_dir, "adapter.rank=4", "adapter.alpha=12")
    rank_map.write_text(json.dumps({"format": "sidestep.estimate/1", "arch": OmegaConf.to_container(cfg.model.arch),
                                    "modules": modules}))
    cfg = compose_cfg(cache_dir, "adapter.rank=4", "adapter.alpha=12", f"adapter.rank_map={rank_map}")
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    model = randomize_lora(dit.transformer)
    save_adapter(model, root / "adapter", NAME)
    (root / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(as_container(cfg)), root / ".hydra" / "config.yaml")  # resolved, as a run saves it
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert sorted({m.r["default"] for m in layers.values()}) == [2, 4, 8]
    return root, model, layers, base.state_dict()


def export_path(adapter: Path, consumer: str) -> Path:
    """Where `adapter/formats.json` sends a consumer."""
    return adapter / json.loads((adapter / "formats.json").read_text())[consumer]["path"]


def peft_delta(layer: LoraLayer) -> torch.Tensor:
    """What PEFT adds to the weight: scaling x B A, scaling = alpha_pattern / rank_pattern for this module."""
    return layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight


def original(name: str) -> str:
    return diffusers_key_to_decoder(name + ".weight")[len("decoder."):-len(".weight")]


def test_comfyui_alpha_of_every_module_is_its_own(run):
    root, _, layers, _ = run
    comfy = load_file(export_path(root / "adapter", "comfyui"))
    assert len([k for k in comfy if k.endswith(".alpha")]) == len(layers)
    for name, layer in layers.items():
        key = "diffusion_model.decoder." + original(name)
        down, up, alpha = comfy[f"{key}.lora_down.weight"], comfy[f"{key}.lora_up.weight"], float(comfy[f"{key}.alpha"])
        assert alpha == RATIO * layer.r["default"], name
        assert torch.allclose(up @ down * alpha / down.shape[0], peft_delta(layer), atol=1e-6), name  # ComfyUI's rule


def test_merged_dit_adds_each_modules_own_scaled_delta(run, tmp_path, capsys):
    from sidestep import export

    root, _, layers, base = run
    export.main([str(root), "--merge", "--format", "comfyui", "--out", str(tmp_path), "--name", NAME])
    folder = tmp_path / "merged" / f"acestep-v15-tiny-{NAME}"
    assert str(folder) in capsys.readouterr().out.replace("\n", "")
    merged = load_file(folder / "model.safetensors")
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert f.metadata()["format"] == "pt"  # transformers' loaders refuse other formats
    for name, layer in layers.items():
        key = diffusers_key_to_decoder(f"{name}.weight")
        assert torch.allclose(merged[key], base[f"{name}.weight"] + peft_delta(layer), atol=1e-6), name
    untouched = "layers.0.self_attn.to_out.0"  # rank 0 in the map
    assert untouched not in layers
    assert torch.equal(merged[diffusers_key_to_decoder(f"{untouched}.weight")], base[f"{untouched}.weight"])


def test_merge_without_the_run_dir_says_what_it_needs(run, tmp_path, capsys):
    from sidestep import export

    root, _, _, _ = run
    alone = shutil.copytree(root / "adapter", tmp_path / "alone")  # an adapter folder outside its run dir
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(alone), "--merge", "--format", "comfyui", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--merge needs a folder inside a run dir" in capsys.readouterr().err


def test_diffusers_files_load_at_each_modules_strength(run, cache_dir):
    from diffusers import AceStepPipeline

    from tests.conftest import compose_cfg

    root, model, _, _ = run
    fresh = model_source(compose_cfg(cache_dir).model).dit().transformer.eval()
    pipeline_file = export_path(root / "adapter", "diffusers_pipeline")
    folder = pipeline_file.parent if pipeline_file.is_file() else pipeline_file
    state_dict, metadata = AceStepPipeline.lora_state_dict(str(folder), return_lora_metadata=True)
    AceStepPipeline.load_lora_into_transformer(state_dict, transformer=fresh, metadata=metadata)
    assert torch.allclose(dit_outputs(fresh), dit_outputs(model), atol=1e-6)


def test_acestep_folder_carries_the_patterns_in_original_names(run):
    root, _, layers, _ = run
    config = json.loads((export_path(root / "adapter", "acestep") / "adapter_config.json").read_text())
    for name, layer in layers.items():
        rank = config["rank_pattern"][original(name)]
        assert rank == layer.r["default"], name
        assert config["alpha_pattern"][original(name)] / rank == layer.scaling["default"], name


def test_a_peft_adapter_with_suffix_patterns_exports_at_peft_strength(run, cache_dir, tmp_path):
    """A PEFT adapter from elsewhere may key its patterns by a name's end (`to_q`); re-exporting it for ComfyUI
    must give each module the alpha PEFT gives it."""
    import shutil

    from peft import LoraConfig, inject_adapter_in_model

    from sidestep import export
    from tests.conftest import compose_cfg

    root, _, _, _ = run
    folder = tmp_path / "foreign"
    shutil.copytree(root / "adapter", folder, ignore=shutil.ignore_patterns("acestep", "*.safetensors"))
    shutil.copy(root / "adapter" / "adapter_model.safetensors", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["alpha_pattern"] = {"cross_attn.to_k": 7.0, "to_q": 5.0}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    export.main([str(folder), "--format", "comfyui", "--out", str(tmp_path / "out")])
    comfy = load_file(export_path(tmp_path / "out", "comfyui"))
    model = inject_adapter_in_model(LoraConfig.from_pretrained(str(folder)),
                                    model_source(compose_cfg(cache_dir).model).dit().transformer)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert {m.scaling["default"] * m.r["default"] for m in layers.values()} == {5.0, 7.0, 12.0}
    for name, layer in layers.items():
        alpha = float(comfy[f"diffusion_model.decoder.{original(name)}.alpha"])
        assert alpha == layer.scaling["default"] * layer.r["default"], name


def test_merge_of_a_run_on_a_checkpoints_folder_keeps_the_variants_config(run, tmp_path):
    """A merged DiT of model=turbo (etc.) keeps the checkpoint's dtype, with the variant's config.json beside it."""
    import shutil

    from sidestep import export
    from sidestep.models.tiny import write_checkpoints

    root, _, layers, base = run
    cfg = OmegaConf.load(root / ".hydra" / "config.yaml")
    variant = write_checkpoints(cfg.model, tmp_path / "checkpoints")  # the tiny DiT's weights, original layout
    weights = load_file(variant / "model.safetensors")
    save_file({k: v.bfloat16() for k, v in weights.items()}, variant / "model.safetensors")  # as published: bf16
    cfg.model.variant, cfg.model.checkpoint_dir = "turbo", str(tmp_path / "checkpoints")
    cfg.model._target_ = "sidestep.models.acestep.AceStepCheckpoint"  # as a run with model=turbo saves it
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, tmp_path / "run" / ".hydra" / "config.yaml")
    shutil.copytree(root / "adapter", tmp_path / "run" / "adapter")
    export.main([str(tmp_path / "run"), "--merge", "--format", "comfyui", "--out", str(tmp_path / "out"), "--name", NAME])
    merged_dir = tmp_path / "out" / "merged" / f"acestep-v15-turbo-{NAME}"
    assert (merged_dir / "config.json").read_text() == (variant / "config.json").read_text()
    name, layer = next(iter(layers.items()))
    merged = load_file(merged_dir / "model.safetensors")[diffusers_key_to_decoder(f"{name}.weight")]
    assert merged.dtype == torch.bfloat16  # written in the checkpoint's own dtype
    expected = base[f"{name}.weight"].bfloat16().float() + peft_delta(layer)
    assert torch.allclose(merged.float(), expected, atol=1e-2)  # bf16 rounding of the merged weight
