"""Finding the DiT weights in what a user points `model.checkpoint_dir` at, and loading them without a second copy.

Accepted: an ACE-Step `checkpoints/` root (holding `acestep-v15-<variant>/`), one variant folder (its
`config.json` + `model.safetensors` or a sharded `model.safetensors.index.json`), or a diffusers-format folder
(`transformer/`, `condition_encoder/`).
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import torch
from safetensors import SafetensorError, safe_open

from sidestep.errors import ConfigError
from sidestep.models.keymap import NULL_CONDITION_KEY, decoder_keys, encoder_keys

log = logging.getLogger(__name__)
VARIANT_PREFIX = "acestep-v15-"
SINGLE_FILE, INDEX_FILE = "model.safetensors", "model.safetensors.index.json"
SILENCE_FILE = "silence_latent.pt"  # beside model.safetensors: [1, 64, 15000], the VAE encoding of silence
VAE_DIR, TEXT_ENCODER_DIR = "vae", "Qwen3-Embedding-0.6B"  # beside the variant folders


@dataclass(frozen=True)
class VariantFolder:
    path: Path
    layout: str  # "original" | "diffusers"

    @property
    def config_file(self) -> Path:
        return self.path / ("transformer/config.json" if self.layout == "diffusers" else "config.json")


def find_variants(root: Path) -> Dict[str, Path]:
    """`{"turbo": root/acestep-v15-turbo, ...}` for every variant folder with a config.json."""
    return {p.name[len(VARIANT_PREFIX):]: p for p in sorted(Path(root).glob(f"{VARIANT_PREFIX}*"))
            if (p / "config.json").is_file()}


def locate(checkpoint_dir: Path, variant: str) -> VariantFolder:
    root = Path(checkpoint_dir)
    if (root / "transformer" / "config.json").is_file():
        return VariantFolder(root, "diffusers")
    if (root / "config.json").is_file():
        return VariantFolder(root, "original")
    variants = find_variants(root)
    if not variants:
        raise no_variants(root)
    if variant not in variants:
        raise ConfigError(f"model.checkpoint_dir: no {VARIANT_PREFIX}{variant}/ in {root} (variants found: "
                          f"{', '.join(map(option_name, variants))}); pick model=<one of them> or point at your ACE-Step "
                          "checkpoints/ folder")
    return VariantFolder(variants[variant], "original")


def shared_folder(folder: VariantFolder, name: str, diffusers_name: str) -> Path:
    """Where a model shared by all variants lives: beside the variant folders (ACE-Step), or a subfolder
    (diffusers). A missing one is named with what to do."""
    path = folder.path / diffusers_name if folder.layout == "diffusers" else folder.path.parent / name
    if not path.is_dir():
        raise ConfigError(f"model.checkpoint_dir: no {path.name}/ folder at {path.parent}; it ships with ACE-Step's "
                          "checkpoints (run ACE-Step once to download it), and preprocessing and sampling need it")
    return path


def read_config(folder: VariantFolder) -> dict:
    try:
        return json.loads(folder.config_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{folder.config_file}: unreadable model config ({err})") from None


def weight_files(folder: Path) -> List[Path]:
    """The safetensors files of an original-layout variant folder, sharded or not."""
    if (folder / INDEX_FILE).is_file():
        index = json.loads((folder / INDEX_FILE).read_text())
        return sorted({folder / name for name in index["weight_map"].values()})
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    raise ConfigError(f"{folder}: no {SINGLE_FILE} or {INDEX_FILE}; is the download complete?")


def read_weights(folder: Path, dtype: torch.dtype, part: str = "decoder") -> Dict[str, torch.Tensor]:
    """One model's tensors (`decoder`: the DiT, `encoder`: the condition encoder) of an original-layout folder,
    under diffusers names, read one tensor at a time."""
    return dict(iter_weights(folder, dtype, part))


def iter_weights(folder: Path, dtype: torch.dtype, part: str = "decoder") -> Iterator[Tuple[str, torch.Tensor]]:
    """`read_weights` one tensor at a time, for a loader that places (or quantizes) each before the next is read."""
    select = {"decoder": decoder_keys, "encoder": encoder_keys}[part]
    for path in weight_files(folder):
        with _open(path) as f:
            for new, old in select(f.keys()).items():
                yield new, f.get_tensor(old).to(dtype)


def iter_diffusers_weights(folder: Path, dtype: torch.dtype) -> Iterator[Tuple[str, torch.Tensor]]:
    """The tensors of a diffusers-format model folder (its own names), one at a time."""
    for path in sorted(folder.glob("*.safetensors")):
        with _open(path) as f:
            for key in f.keys():
                yield key, f.get_tensor(key).to(dtype)


def read_null_condition(files: List[Path], dtype: torch.dtype) -> torch.Tensor:
    """The learned "no text" condition CFG dropout swaps in, as [1, 1, width]."""
    for path in files:
        with _open(path) as f:
            if NULL_CONDITION_KEY in f.keys():
                return f.get_tensor(NULL_CONDITION_KEY).to(dtype).reshape(1, 1, -1)
    raise ConfigError(f"{files[0].parent if files else 'checkpoint'}: no {NULL_CONDITION_KEY} in the weights; "
                      "is this an ACE-Step 1.5 checkpoint?")


def _open(path: Path):
    try:
        return safe_open(path, framework="pt")
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{path}: unreadable safetensors file ({err}); re-download it") from None


def assign_weights(transformer: torch.nn.Module, weights: Dict[str, torch.Tensor], source: Path) -> None:
    """Put the tensors into a meta-device model (no second copy); every key must match, name and shape."""
    check_fit(weight_shapes(transformer), {k: tuple(v.shape) for k, v in weights.items()}, source)
    transformer.load_state_dict(weights, strict=True, assign=True)


def weight_shapes(model: torch.nn.Module) -> Dict[str, Tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_fit(expected: Dict[str, Tuple[int, ...]], given: Dict[str, Tuple[int, ...]], source) -> None:
    """Every key must match, name and shape; else one error naming how many do not and an example of each."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = [k for k in expected if k in given and given[k] != expected[k]]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            problems.append(f"{len(wrong)} with the wrong shape (e.g. {k}: {list(given[k])} vs {list(expected[k])})")
        raise ConfigError(f"{source}: weights do not fit the model config: {'; '.join(problems)}")


CHECKPOINT_OWNED = ("is_turbo", "timestep_mu", "timestep_sigma")
# base and sft train best (turbo is distilled); of each kind the XL one, as its folder is only there on purpose (every
# ACE-Step install has the 2B turbo)
AUTO_PREFERENCE = ("xl-base", "base", "xl-sft", "sft", "xl-turbo", "turbo")


def pick_variant(checkpoint_dir: Path) -> str:
    """What `model=auto` trains: the folder's own variant, else the first of AUTO_PREFERENCE, else of others found."""
    root = Path(checkpoint_dir)
    if root.name.startswith(VARIANT_PREFIX) and (root / "config.json").is_file():
        return root.name[len(VARIANT_PREFIX):]
    variants = find_variants(root)
    ranked = [v for v in AUTO_PREFERENCE if v in variants] + [v for v in variants if v not in AUTO_PREFERENCE]
    if not ranked:
        if (root / "transformer" / "config.json").is_file():
            return "diffusers"
        raise no_variants(root)
    return ranked[0]


def option_name(variant: str) -> str:
    """The `model=` option of a variant folder's name: `xl-turbo` (acestep-v15-xl-turbo/) -> `xl_turbo`."""
    return variant.replace("-", "_")


def no_variants(root: Path) -> ConfigError:
    return ConfigError(f"model.checkpoint_dir: no {VARIANT_PREFIX}*/ variant folders in {root}; point it at your "
                       "ACE-Step checkpoints/ folder (no weights yet? python -m sidestep.tiny DIR writes a tiny one)")


def decoder_arch(files: List[Path]) -> Dict[str, int]:
    """The DiT's widths and depths, read off its weight shapes (the original config.json lacks some, e.g.
    `encoder_hidden_size`, the width of the condition it is fed, which differs from the DiT's in the XL variants)."""
    shapes = {}
    for path in files:
        with _open(path) as f:
            for new, old in decoder_keys(f.keys()).items():
                shapes[new] = tuple(f.get_slice(old).get_shape())
    try:
        hidden, condition = shapes["condition_embedder.weight"]
        head_dim = shapes["layers.0.self_attn.norm_q.weight"][0]
        _, in_channels, patch = shapes["proj_in_conv.weight"]
        return dict(hidden_size=hidden, encoder_hidden_size=condition, head_dim=head_dim,
                    intermediate_size=shapes["layers.0.mlp.gate_proj.weight"][0],
                    num_hidden_layers=len({k.split(".")[1] for k in shapes if k.startswith("layers.")}),
                    num_attention_heads=shapes["layers.0.self_attn.to_q.weight"][0] // head_dim,
                    num_key_value_heads=shapes["layers.0.self_attn.to_k.weight"][0] // head_dim,
                    in_channels=in_channels, patch_size=patch,
                    audio_acoustic_hidden_dim=shapes["proj_out_conv.weight"][1])
    except KeyError as err:
        raise ConfigError(f"{files[0].parent if files else 'checkpoint'}: no DiT weights ({err.args[0]} missing "
                          "under decoder.*); is this an ACE-Step 1.5 checkpoint?") from None
