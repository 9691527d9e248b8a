"""Original ACE-Step 1.5 checkpoint keys -> diffusers `AceStepTransformer1DModel` keys (DESIGN §3), as data.

The original `model.safetensors` holds `decoder.*` (the DiT), `encoder.*` (condition encoder), `tokenizer.*`,
`detokenizer.*` and `null_condition_emb`. Training needs the decoder and the null embedding only.
"""

from typing import Dict, Iterable, Optional, Tuple

DECODER_PREFIX = "decoder."
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
    inverse = {new: old for old, new in ATTENTION_RENAMES.items()}
    for block in ATTENTION_BLOCKS:
        for new, old in inverse.items():
            marker = f".{block}.{new}."
            if marker in key:
                return DECODER_PREFIX + key.replace(marker, f".{block}.{old}.")
    return DECODER_PREFIX + key


def decoder_keys(keys: Iterable[str]) -> Dict[str, str]:
    """{diffusers key: original key} for every DiT key among `keys`."""
    mapping = {}
    for key in keys:
        new = decoder_key_to_diffusers(key)
        if new is not None:
            mapping[new] = key
    return mapping
