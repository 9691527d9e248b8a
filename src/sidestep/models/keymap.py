"""Original ACE-Step 1.5 checkpoint keys -> diffusers `AceStepTransformer1DModel` keys, as data.

Verified: a tiny original model mapped this way loads `strict=True`, and matches the original ACE-Step code's
outputs to ~1e-6 (fp32). diffusers' own converter renames only the prefix and `proj_in/out`, not the attention
projections, so it is not used.

The original `model.safetensors` holds `decoder.*` (the DiT), `encoder.*` (condition encoder), `tokenizer.*`,
`detokenizer.*` and `null_condition_emb`. Training needs the decoder and the null embedding; preprocessing and
sampling also need the condition encoder.
"""

from typing import Callable, Dict, Iterable, Optional, Tuple

DECODER_PREFIX = "decoder."
ENCODER_PREFIX = "encoder."
NULL_CONDITION_KEY = "null_condition_emb"

# Whole-prefix renames, tried in order after the decoder prefix is removed.
PREFIX_RENAMES: Tuple[Tuple[str, str], ...] = (
    ("proj_in.1.", "proj_in_conv."),
    ("proj_out.1.", "proj_out_conv."),
)
# Renames of one name segment inside `self_attn` / `cross_attn`.
ATTENTION_RENAMES: Dict[str, str] = {
    "q_proj": "to_q",
    "k_proj": "to_k",
    "v_proj": "to_v",
    "o_proj": "to_out.0",
    "q_norm": "norm_q",
    "k_norm": "norm_k",
}
ATTENTION_BLOCKS = ("self_attn", "cross_attn")


def decoder_key_to_diffusers(key: str) -> Optional[str]:
    """The diffusers name of an original checkpoint key, or None when the key is not part of the DiT."""
    if not key.startswith(DECODER_PREFIX):
        return None
    rest = key[len(DECODER_PREFIX):]
    for old, new in PREFIX_RENAMES:
        if rest.startswith(old):
            return new + rest[len(old):]
    return _rename_attention(rest)


def encoder_key_to_diffusers(key: str) -> Optional[str]:
    """The condition encoder's name of an original `encoder.*` key (same attention renames), else None."""
    return _rename_attention(key[len(ENCODER_PREFIX):]) if key.startswith(ENCODER_PREFIX) else None


def _rename_attention(rest: str) -> str:
    parts = rest.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ATTENTION_BLOCKS and i + 1 < len(parts) and parts[i + 1] in ATTENTION_RENAMES:
            parts[i + 1] = ATTENTION_RENAMES[parts[i + 1]]
            break
    return ".".join(parts)


def diffusers_key_to_decoder(key: str) -> str:
    """The inverse, for writing original-layout files (merged weights, test fixtures)."""
    for old, new in PREFIX_RENAMES:
        if key.startswith(new):
            return DECODER_PREFIX + old + key[len(new):]
    return DECODER_PREFIX + _original_attention(key)


def diffusers_key_to_encoder(key: str) -> str:
    """The original `encoder.*` name of a condition encoder key."""
    return ENCODER_PREFIX + _original_attention(key)


def _original_attention(key: str) -> str:
    inverse = {new: old for old, new in ATTENTION_RENAMES.items()}
    for block in ATTENTION_BLOCKS:
        for new, old in inverse.items():
            marker = f".{block}.{new}."
            if marker in key:
                return key.replace(marker, f".{block}.{old}.")
    return key


def decoder_keys(keys: Iterable[str]) -> Dict[str, str]:
    """{diffusers key: original key} for every DiT key among `keys`."""
    return _mapping(keys, decoder_key_to_diffusers)


def encoder_keys(keys: Iterable[str]) -> Dict[str, str]:
    """{condition encoder key: original key} for every `encoder.*` key among `keys`."""
    return _mapping(keys, encoder_key_to_diffusers)


def _mapping(keys: Iterable[str], rename: Callable[[str], Optional[str]]) -> Dict[str, str]:
    mapping = {}
    for key in keys:
        new = rename(key)
        if new is not None:
            mapping[new] = key
    return mapping
