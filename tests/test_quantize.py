"""`model.quantize=nf4|int8`: the DiT's block linears really are bitsandbytes layers, a quantized run resumes
bit-identically (with samples rendered by the same quantized DiT in between), and nothing quantized leaves it:
the adapter is the one a full-precision base gets, and `--merge` folds into the full-precision weights."""

import re

import bitsandbytes as bnb
import pytest
import torch
from peft import get_peft_model_state_dict
from peft.tuners.lora import bnb as peft_bnb
from safetensors.torch import load_file, save_file

from sidestep.adapters.attach import adapter_config, add_adapter
from sidestep.adapters.files import read_adapter
from sidestep.adapters.merge import merge_into_variant
from sidestep.config import resolve
from sidestep.errors import ConfigError
from sidestep.models.quantize import BLOCK_LINEAR, quantized_layers
from sidestep.models.source import model_source
from sidestep.models.tiny import write_checkpoints
from sidestep.train import train_adapter
from sidestep.training.fingerprint import fingerprint, mismatches
from tests.conftest import dit_outputs

BASE = ("trainer.max_steps=4", "trainer.gradient_accumulation=2", "adapter.dropout=0.1", "data.crop_seconds=2")
LAYERS = {"nf4": (bnb.nn.Linear4bit, peft_bnb.Linear4bit), "int8": (bnb.nn.Linear8bitLt, peft_bnb.Linear8bitLt)}


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_block_linears_are_bitsandbytes_layers_with_bitsandbytes_lora_on_them(make_cfg, mode):
    cfg = make_cfg(f"model.quantize={mode}")
    transformer = model_source(cfg.model).dit().transformer
    blocks = [n for n, m in model_source(make_cfg().model).dit().transformer.named_modules()
              if isinstance(m, torch.nn.Linear) and BLOCK_LINEAR.fullmatch(n)]
    base_layer, lora_layer = LAYERS[mode]
    layers = quantized_layers(transformer)
    assert sorted(layers) == sorted(blocks) and all(type(m) is base_layer for m in layers.values())
    assert all(p.dtype in (torch.uint8, torch.int8) for n, p in transformer.named_parameters() if n.endswith(
        tuple(f"{b}.weight" for b in blocks)))
    assert all(p.dtype == torch.float32 for n, p in transformer.named_parameters() if not BLOCK_LINEAR.fullmatch(n))
    plain = dit_outputs(model_source(make_cfg().model).dit().transformer)
    assert (dit_outputs(transformer) - plain).abs().max() < 0.2 * plain.abs().max()  # the same model, rounded
    add_adapter(transformer, adapter_config(cfg), seed=0)
    assert type(transformer.get_submodule("layers.0.self_attn.to_q")) is lora_layer


def test_every_source_quantizes_the_same_weights_the_same_way(make_cfg, tmp_path):
    """The tiny source, an original-layout checkpoint folder and a diffusers-format folder of the same weights give
    the same NF4 DiT, to the bit."""
    tiny = make_cfg("model.quantize=nf4")
    want = dit_outputs(model_source(tiny.model).dit().transformer)
    original = write_checkpoints(tiny.model, tmp_path / "checkpoints", variant="turbo")
    diffusers = tmp_path / "diffusers"
    reference = model_source(make_cfg().model).dit()
    reference.transformer.save_pretrained(diffusers / "transformer")
    (diffusers / "condition_encoder").mkdir()
    save_file({"null_condition_emb": reference.null_condition_emb},
              diffusers / "condition_encoder" / "diffusion_pytorch_model.safetensors")
    for folder in (original, diffusers):
        cfg = resolve(make_cfg("model=turbo", f"model.checkpoint_dir={folder}", "model.quantize=nf4"))
        assert torch.equal(dit_outputs(model_source(cfg.model).dit().transformer), want), folder


@pytest.fixture(scope="module")
def nf4_run(tmp_path_factory, cache_dir):
    """An nf4 run that checkpoints every step and renders a sample (same quantized DiT) after step 2."""
    from tests.conftest import compose_cfg

    run = tmp_path_factory.mktemp("nf4")
    cfg = compose_cfg(cache_dir, *BASE, "model.quantize=nf4", "trainer.save_every_steps=1", "sample.every_n_steps=2",
                      "sample.count=1", "sample.duration=1")
    result = train_adapter(cfg, run)
    return cfg, run, result


def test_a_quantized_run_resumes_bit_identically_across_a_sample(nf4_run, make_cfg, tmp_path):
    _, run, result = nf4_run
    assert result.final_loss == result.final_loss and (run / "samples" / "step-0000002").is_dir()
    train_adapter(make_cfg(*BASE, "model.quantize=nf4", f"resume_from={run / 'checkpoints' / 'step-0000002'}"), tmp_path)
    a, b = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (run, tmp_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_quantized_checkpoint_is_not_resumed_on_another_base(make_cfg):
    lines = mismatches(fingerprint(make_cfg("model.quantize=nf4"), []), fingerprint(make_cfg(), []))
    assert lines == ["model.quantize: checkpoint has 'nf4', this run has None"]


def test_its_adapter_is_plain_and_loads_in_the_full_precision_model(nf4_run, make_cfg):
    _, run, _ = nf4_run
    weights, config = read_adapter(run / "adapter")
    plain = model_source(make_cfg().model).dit().transformer
    add_adapter(plain, adapter_config(make_cfg(*BASE)), seed=0)
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in get_peft_model_state_dict(plain).items()}
    assert all(v.dtype.is_floating_point for v in weights.values())
    base = model_source(make_cfg().model).dit().transformer.eval()
    before = dit_outputs(base)
    base.load_lora_adapter(run / "adapter", weight_name="adapter_model.safetensors", prefix=None)
    assert not quantized_layers(base) and not torch.equal(dit_outputs(base), before)


def test_merging_from_a_quantized_run_folds_into_the_full_precision_weights(nf4_run, make_cfg, tmp_path):
    cfg, run, _ = nf4_run
    weights, config = read_adapter(run / "adapter")
    folder = merge_into_variant(model_source(cfg.model), weights, config, tmp_path, "q")
    original = load_file(write_checkpoints(make_cfg().model, tmp_path / "plain", variant="tiny") / "model.safetensors")
    merged = load_file(folder / "model.safetensors")
    assert merged.keys() == original.keys()
    assert all(merged[k].dtype == original[k].dtype == torch.float32 and merged[k].shape == original[k].shape
               for k in original)
    untouched = [k for k in original if "mlp" in k or not k.startswith("decoder.layers.")]
    assert untouched and all(torch.equal(merged[k], original[k]) for k in untouched)  # never requantized


@pytest.mark.parametrize("adapter, name", [("lokr", "Lokr"), ("loha", "Loha"), ("oft", "Oft"), ("dora", "Lora (DoRA)")])
def test_an_adapter_type_that_cannot_train_on_bitsandbytes_is_refused_in_one_line(make_cfg, adapter, name):
    with pytest.raises(ConfigError, match=rf"^model.quantize: nf4: a {re.escape(name)} adapter cannot train on a "
                                          r"bitsandbytes base here; use model.quantize=null or adapter=lora$"):
        make_cfg("model.quantize=nf4", f"adapter={adapter}")
    assert make_cfg("model.quantize=nf4").model.quantize == "nf4"  # LoRA can


def test_a_quantized_base_on_apple_mps_is_refused_in_one_line(make_cfg):
    with pytest.raises(ConfigError, match=r"^model.quantize: int8: bitsandbytes has no Apple MPS kernels"):
        make_cfg("model.quantize=int8", "trainer.device=mps")


def test_nf4_weights_are_nf4_not_fp4(make_cfg):
    """Each block weight dequantizes to exactly what bitsandbytes' NF4 (blocks of 64, double quantization) makes of
    the full-precision one; FP4, the other 4-bit code, rounds to other values."""
    import bitsandbytes.functional as bnb_f

    quantized = quantized_layers(model_source(make_cfg("model.quantize=nf4").model).dit().transformer)
    plain = model_source(make_cfg().model).dit().transformer.state_dict()
    for name, layer in quantized.items():
        expected = bnb_f.dequantize_4bit(*bnb_f.quantize_4bit(plain[f"{name}.weight"], blocksize=64,
                                                              compress_statistics=True, quant_type="nf4"))
        assert torch.equal(bnb_f.dequantize_4bit(layer.weight.data, layer.weight.quant_state), expected), name
