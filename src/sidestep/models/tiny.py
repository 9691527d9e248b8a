"""The tiny random ACE-Step stack (`model=tiny`): the demo and the tests run on it, and nothing is downloaded.

Each model is seeded from `model.init_seed`, so every process and every later command (preprocess, train,
sample) builds the same weights. `write_checkpoints` saves the stack in the layout of a user's ACE-Step
`checkpoints/` folder, so the real loading code is tested end to end on it;
`python -m sidestep.tiny DIR [--variant turbo|base|sft|xl-turbo|xl-base|xl-sft]` writes one, to try preprocessing, training and sampling
without downloading weights.
"""

import json
from pathlib import Path
from typing import Dict, Iterator, Tuple

import torch
from diffusers import AutoencoderOobleck
from diffusers.pipelines.ace_step import AceStepConditionEncoder
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

from sidestep.atomic import save_safetensors
from sidestep.models.checkpoints import INDEX_FILE, SILENCE_FILE, TEXT_ENCODER_DIR, VAE_DIR, VARIANT_PREFIX
from sidestep.models.dit import DiT, dit_of_arch
from sidestep.models.keymap import diffusers_key_to_decoder, diffusers_key_to_encoder
from sidestep.models.source import ModelSource

END_OF_TEXT = "<|endoftext|>"
# Offsets added to `init_seed`, one per model, so the models do not share random streams.
SEED_OFFSETS = {"vae": 1, "text_encoder": 2, "condition_encoder": 3}
XL_PREFIX = "xl-"  # the XL variants' folders: acestep-v15-xl-turbo/, -xl-base/, -xl-sft/
# The tiny DiT XL-shaped: 80 wide (its condition stays 64), attention 8 x 16 = 128 wide, MLP 160, 3 layers
TINY_XL_ARCH = {"hidden_size": 80, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 8}
XL_SHARDS = 2  # the XL's weights come in shards (4 of about 5 GB) with an index: written so, in 2


class TinyModel(ModelSource):
    """Random weights from `model.init_seed`, in fp32, then cast to what the caller asks for."""

    def _dit_tensors(self, dtype: torch.dtype) -> Iterator[Tuple[str, torch.Tensor]]:
        for name, tensor in tiny_dit(self.cfg).transformer.state_dict().items():
            yield name, tensor.to(dtype)

    def _null_condition(self, dtype: torch.dtype) -> torch.Tensor:
        return tiny_dit(self.cfg).null_condition_emb.to(dtype)

    def _weights_location(self) -> str:
        return f"model=tiny (init_seed {self.cfg.init_seed})"

    def _vae(self, dtype: torch.dtype) -> AutoencoderOobleck:
        return tiny_vae(self.cfg)

    def _text_encoder(self, dtype: torch.dtype) -> Tuple[Qwen3Model, PreTrainedTokenizerFast]:
        return tiny_text_encoder(self.cfg), tiny_tokenizer()

    def _condition_encoder(self, dtype: torch.dtype) -> AceStepConditionEncoder:
        return tiny_condition_encoder(self.cfg)

    def helper_parameters(self) -> Dict[str, int]:
        with torch.device("meta"):  # shapes only: nothing is drawn or stored
            helpers = {"vae": tiny_vae(self.cfg), "text_encoder": tiny_text_encoder(self.cfg),
                       "condition_encoder": AceStepConditionEncoder(**_settings(self.cfg.tiny_stack.condition_encoder))}
        return {name: sum(t.numel() for t in [*m.parameters(), *m.buffers()]) for name, m in helpers.items()}

    def identity(self) -> str:
        return json.dumps({"tiny": self.cfg.init_seed}, sort_keys=True)

    def weights_digest(self) -> str:
        return f"tiny-init-seed-{self.cfg.init_seed}"

    def original_folder(self, scratch: Path) -> Path:
        return write_checkpoints(self.cfg, scratch, variant="tiny")


def tiny_dit(model_cfg: DictConfig, dtype: torch.dtype = torch.float32) -> DiT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_cfg.init_seed)
        transformer = dit_of_arch(model_cfg)
        null = torch.randn(1, 1, model_cfg.arch.encoder_hidden_size)
    transformer.requires_grad_(False)
    return DiT(transformer if dtype == torch.float32 else transformer.to(dtype), null.to(dtype))


def tiny_vae(model_cfg: DictConfig) -> AutoencoderOobleck:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_cfg.init_seed + SEED_OFFSETS["vae"])
        return AutoencoderOobleck(**OmegaConf.to_container(model_cfg.tiny_stack.vae, resolve=True))


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE over the 256-byte alphabet with no merges: every UTF-8 string encodes, one token per byte."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    vocab[END_OF_TEXT] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([END_OF_TEXT])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT)


def tiny_text_encoder(model_cfg: DictConfig) -> Qwen3Model:
    config = Qwen3Config(**OmegaConf.to_container(model_cfg.tiny_stack.text_encoder, resolve=True), vocab_size=len(tiny_tokenizer()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_cfg.init_seed + SEED_OFFSETS["text_encoder"])
        return Qwen3Model(config)


def tiny_condition_encoder(model_cfg: DictConfig) -> AceStepConditionEncoder:
    """Its `null_condition_emb` is the DiT's (one tensor in a real checkpoint too), so CFG at sampling time uses
    the embedding that CFG dropout trained with."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_cfg.init_seed + SEED_OFFSETS["condition_encoder"])
        encoder = AceStepConditionEncoder(**_settings(model_cfg.tiny_stack.condition_encoder))
        with torch.no_grad():  # a fixed, non-zero "encoded silence", as the real silence_latent.pt is
            encoder.silence_latent.copy_(0.5 * torch.randn(encoder.silence_latent.shape))
            encoder.null_condition_emb.copy_(tiny_dit(model_cfg).null_condition_emb)
    return encoder


def _settings(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def xl_shaped(model_cfg: DictConfig) -> DictConfig:
    """The tiny model with its DiT made wider than the condition it is fed, as the XL variants' (hidden 2560 fed
    2048, attention 32 x 128 = 4096 wide)."""
    return OmegaConf.merge(model_cfg, {"arch": TINY_XL_ARCH})


def write_checkpoints(model_cfg: DictConfig, root: Path, variant: str = "turbo") -> Path:
    """Save the tiny stack as an ACE-Step `checkpoints/` folder: `acestep-v15-<variant>/` (config.json,
    model.safetensors with original key names, silence_latent.pt), `vae/` and the text encoder folder. A 2B
    variant's config.json, like the original's, has no `encoder_hidden_size`; an XL variant (`xl-*`) is written
    XL-shaped (`xl_shaped`) in the XL's layout: weights in shards with their index, and a config.json naming the
    condition encoder's widths apart from the DiT's."""
    root = Path(root)
    folder = root / f"{VARIANT_PREFIX}{variant}"
    folder.mkdir(parents=True, exist_ok=True)
    xl = variant.startswith(XL_PREFIX)
    model_cfg = xl_shaped(model_cfg) if xl else model_cfg
    dit = tiny_dit(model_cfg)
    encoder = tiny_condition_encoder(model_cfg)
    state = {diffusers_key_to_decoder(k): v.contiguous() for k, v in dit.transformer.state_dict().items()}
    for key, value in encoder.state_dict().items():
        if key not in ("silence_latent", "null_condition_emb"):
            state[diffusers_key_to_encoder(key)] = value.contiguous()
    state["null_condition_emb"] = dit.null_condition_emb.contiguous()
    if xl:
        _save_shards(state, folder, XL_SHARDS)
    else:
        save_safetensors(state, folder / "model.safetensors")
    torch.save(encoder.silence_latent.transpose(1, 2).contiguous(), folder / SILENCE_FILE)  # original: [1, 64, T]
    arch = OmegaConf.to_container(model_cfg.arch, resolve=True)
    condition = arch.pop("encoder_hidden_size")  # not in the 2B config.json: the loader reads it off the weights
    if xl:
        stack = model_cfg.tiny_stack.condition_encoder
        arch.update(encoder_hidden_size=condition, encoder_intermediate_size=stack.intermediate_size,
                    encoder_num_attention_heads=stack.num_attention_heads,
                    encoder_num_key_value_heads=stack.num_key_value_heads)
    config = {**arch, "is_turbo": variant.endswith("turbo"),
              "timestep_mu": model_cfg.timestep_mu, "timestep_sigma": model_cfg.timestep_sigma,
              "data_proportion": 0.5}  # a real config.json has it; training ignores it (ACE-Step's loss forces r = t)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tiny_vae(model_cfg).save_pretrained(root / VAE_DIR)
    tiny_text_encoder(model_cfg).save_pretrained(root / TEXT_ENCODER_DIR)
    tiny_tokenizer().save_pretrained(root / TEXT_ENCODER_DIR)
    return folder


def _save_shards(state: Dict[str, torch.Tensor], folder: Path, shards: int) -> None:
    """`model-0000i-of-0000n.safetensors` and the `model.safetensors.index.json` that maps each key to its file."""
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i::shards]}
        save_safetensors(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    (folder / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
