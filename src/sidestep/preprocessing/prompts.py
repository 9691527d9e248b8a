"""The exact text ACE-Step 1.5 feeds its text encoder (DESIGN §5).

Preprocessing and sampling both build prompts here, so an adapter is trained on the text it is later
generated with. The duration is whole seconds, cut down, as ACE-Step's inference writes it (`int(duration)`).
"""

from typing import Optional, Union

from sidestep.preprocessing.labels import Label

DIT_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"


def caption_prompt(label: Label, duration_seconds: float) -> str:
    """Instruction, caption and metas (bpm, time signature, key, duration), for the text encoder."""
    metas = (f"- bpm: {_or_na(label.bpm)}\n"
             f"- timesignature: {_or_na(label.timesignature)}\n"
             f"- keyscale: {_or_na(label.keyscale)}\n"
             f"- duration: {int(duration_seconds)} seconds\n")
    return f"# Instruction\n{DIT_INSTRUCTION}\n\n# Caption\n{label.caption}\n\n# Metas\n{metas}<|endoftext|>\n"


def lyrics_prompt(label: Label) -> str:
    """Language header and lyrics, as ACE-Step's inference formats them (not the bare lyrics)."""
    return f"# Languages\n{label.language}\n\n# Lyric\n{label.lyrics}<|endoftext|>"


def _or_na(value: Optional[Union[int, str]]) -> str:
    return "N/A" if value is None else str(value)
