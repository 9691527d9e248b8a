"""Real checkpoint folders: found, read through the key table onto diffusers' DiT, and refused clearly when wrong."""


import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from sidestep.errors import ConfigError
from sidestep.models.checkpoints import find_variants, locate
from sidestep.models.keymap import decoder_key_to_diffusers, diffusers_key_to_decoder
from sidestep.models.source import model_source
from tests.helpers.models import TINY_ARCH, dit_outputs, real_cfg, write_original


@pytest.fixture
def reference(make_cfg):
    """The tiny random DiT the checkpoints below are written from."""
    return model_source(make_cfg().model).dit()


def test_key_table_round_trips_and_renames_attention_only():
    assert decoder_key_to_diffusers("decoder.layers.3.cross_attn.o_proj.weight") == "layers.3.cross_attn.to_out.0.weight"
    assert decoder_key_to_diffusers("decoder.layers.0.self_attn.q_norm.weight") == "layers.0.self_attn.norm_q.weight"
    assert decoder_key_to_diffusers("decoder.proj_in.1.weight") == "proj_in_conv.weight"
    assert decoder_key_to_diffusers("decoder.layers.1.mlp.down_proj.weight") == "layers.1.mlp.down_proj.weight"
    assert decoder_key_to_diffusers("encoder.lyric_encoder.layers.0.self_attn.q_proj.weight") is None
    for key in ("layers.3.cross_attn.to_out.0.weight", "proj_out_conv.bias", "time_embed_r.linear_1.weight"):
        assert decoder_key_to_diffusers(diffusers_key_to_decoder(key)) == key


@pytest.mark.parametrize("shards", [1, 2])
def test_original_layout_loads_to_the_same_dit_outputs(make_cfg, reference, tmp_path, shards):
    write_original(tmp_path / "acestep-v15-turbo", reference, shards=shards)
    cfg = real_cfg(make_cfg, tmp_path)
    assert OmegaConf.to_container(cfg.model.arch) == TINY_ARCH and cfg.model.is_turbo
    dit = model_source(cfg.model).dit()
    assert torch.equal(dit_outputs(dit.transformer), dit_outputs(reference.transformer))
    assert torch.equal(dit.null_condition_emb, reference.null_condition_emb)
    assert not any(p.requires_grad for p in dit.transformer.parameters())


def test_diffusers_layout_loads_to_the_same_dit_outputs(make_cfg, reference, tmp_path):
    reference.transformer.save_pretrained(tmp_path / "transformer")
    (tmp_path / "condition_encoder").mkdir()
    save_file({"null_condition_emb": reference.null_condition_emb}, tmp_path / "condition_encoder" / "diffusion_pytorch_model.safetensors")
    dit = model_source(real_cfg(make_cfg, tmp_path).model).dit()
    diff = (dit_outputs(dit.transformer) - dit_outputs(reference.transformer)).abs().max().item()
    assert diff < 1e-5, diff


def test_variant_detection_in_a_checkpoints_root(reference, tmp_path):
    for variant in ("turbo", "base"):
        write_original(tmp_path / f"acestep-v15-{variant}", reference)
    (tmp_path / "vae").mkdir()
    assert sorted(find_variants(tmp_path)) == ["base", "turbo"]
    assert locate(tmp_path, "base").path.name == "acestep-v15-base"
    assert locate(tmp_path / "acestep-v15-turbo", "sft").layout == "original"  # a variant folder is taken as given
    with pytest.raises(ConfigError, match=r"no acestep-v15-sft/ in .* \(variants found: base, turbo\)"):
        locate(tmp_path, "sft")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as none_there:  # issue 27: "(variants found: none); pick model=<one of them>"
        locate(tmp_path / "empty", "turbo")
    assert "one of them" not in str(none_there.value) and "python -m sidestep.tiny" in str(none_there.value)


def test_training_runs_on_an_original_layout_checkpoint(make_cfg, reference, tmp_path):
    from sidestep.train import train_adapter

    write_original(tmp_path / "ckpt" / "acestep-v15-base", reference)
    cfg = make_cfg("model=base", f"model.checkpoint_dir={tmp_path / 'ckpt'}", "trainer.max_steps=3")
    model_source(cfg.model).settle(cfg.model)
    assert train_adapter(cfg, tmp_path / "run").steps == 3


def test_broken_checkpoints_give_one_clear_line(make_cfg, reference, tmp_path):
    folder = write_original(tmp_path / "bad" / "acestep-v15-turbo", reference,
                            extra={"decoder.layers.9.self_attn.q_proj.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match=r"weights do not fit the model config: 1 unexpected \(e.g. layers.9.self_attn.to_q.weight\)"):
        model_source(real_cfg(make_cfg, tmp_path / "bad").model).dit()

    cfg = real_cfg(make_cfg, tmp_path / "bad")
    cfg.model.arch.intermediate_size = 96
    with pytest.raises(ConfigError, match="with the wrong shape"):
        model_source(cfg.model).dit()

    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="model.safetensors: unreadable safetensors file"):
        model_source(real_cfg(make_cfg, tmp_path / "bad").model).dit()

    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="no model.safetensors or model.safetensors.index.json"):
        model_source(real_cfg(make_cfg, tmp_path / "bad").model).dit()


def test_model_auto_prefers_base_then_sft_then_turbo_and_records_the_choice(make_cfg, reference, tmp_path, caplog):
    caplog.set_level("INFO")
    write_original(tmp_path / "acestep-v15-turbo", reference)
    cfg = real_cfg(make_cfg, tmp_path, variant="auto")
    assert cfg.model.variant == "turbo" and cfg.model.is_turbo
    write_original(tmp_path / "acestep-v15-sft", reference)
    write_original(tmp_path / "acestep-v15-base", reference)
    cfg = real_cfg(make_cfg, tmp_path, variant="auto")
    assert cfg.model.variant == "base"
    assert "model=auto: training base (found: base, sft, turbo)" in caplog.text
    assert torch.equal(dit_outputs(model_source(cfg.model).dit().transformer), dit_outputs(reference.transformer))
    assert real_cfg(make_cfg, tmp_path / "acestep-v15-sft", variant="auto").model.variant == "sft"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no acestep-v15-\\*/ variant folders"):
        real_cfg(make_cfg, empty, variant="auto")


def test_cli_records_the_checkpoints_numbers_in_the_saved_config(cli, reference, tmp_path, cache_dir):
    write_original(tmp_path / "ckpt" / "acestep-v15-base", reference)
    run = tmp_path / "run"
    proc = cli("experiment=demo", "model=base", f"model.checkpoint_dir={tmp_path / 'ckpt'}", "trainer.max_steps=2",
               "ui.yes=true", f"data.synthetic.cache_dir={cache_dir}", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = OmegaConf.load(run / ".hydra" / "config.yaml").model
    assert saved.arch.hidden_size == 64 and saved.is_turbo is True and saved.variant == "base"
    assert "model.arch.hidden_size = 64 from the checkpoint's config.json (config said 2048)" in proc.stdout + proc.stderr

    proc = cli("experiment=demo", "model=sft", f"model.checkpoint_dir={tmp_path / 'ckpt'}", "ui.yes=true")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: model.checkpoint_dir: no acestep-v15-sft/ in {tmp_path / 'ckpt'} (variants found: base); "
        "pick model=<one of them> or point at your ACE-Step checkpoints/ folder"]
