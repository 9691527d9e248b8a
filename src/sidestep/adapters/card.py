"""The model card, `README.md` beside an exported adapter: what it was trained on, its trigger tag, the strength to
load it at, the prompts of its samples with links to their audio, and which file each program loads.

It is Markdown, and part of it comes from the user (captions, tags, folder names): every such text goes through
`md_text`, so a caption holding `<script>` or `](javascript:...)` reads as the characters it is, never as markup.
"""

import html
import json
import re
from typing import Dict, List, Tuple
from urllib.parse import quote

CARD = "README.md"
_INLINE = re.compile(r"([\\`*_\[\]|~])")  # emphasis, code, links, table cells, strikethrough
_LIST_MARK = re.compile(r"^([-+#]|\d+[.)])(?=\s|$)")  # what starts a list or a heading at a line's start
PROGRAMS = {"diffusers": "diffusers / PEFT (`transformer.load_lora_adapter`)",
            "diffusers_pipeline": "diffusers pipeline (`pipe.load_lora_weights`)",
            "acestep": "ACE-Step (its LoRA path box)", "comfyui": "ComfyUI (`models/loras/`, a LoRA loader node)"}


def md_text(value) -> str:
    """`value` as literal text on one line of Markdown: HTML escaped, the characters of emphasis, code, links and
    tables backslashed, and so is a list or heading mark it starts with."""
    text = _INLINE.sub(r"\\\1", html.escape(" ".join(str(value).split()), quote=False))
    return _LIST_MARK.sub(lambda m: m.group(1)[:-1] + "\\" + m.group(1)[-1], text)


def md_link(text: str, path: str) -> str:
    return f"[{md_text(text)}]({quote(path)})"


def model_card(name: str, header: Dict[str, str], formats: Dict[str, dict], samples: List[Tuple[str, str]]) -> str:
    """`header`: the facts of the weights file (`adapters/files.file_header`); `formats`: what `formats.json` lists;
    `samples`: (prompt, link relative to the card) of the audio rendered with these weights."""
    def get(key: str, default: str = "?") -> str:
        return md_text(header.get(key, default))

    size = f"rank {get('rank')}, alpha {get('alpha')}" if "rank" in header else f"block size {get('block_size')}"
    dataset = next(iter(_json(header.get("ss_dataset_dirs", ""))), None)
    trained_on = (f"{get('ss_num_train_images')} songs ({get('sidestep_dataset_minutes')} min of audio)"
                  + (f" from {md_text(dataset)}" if dataset else "")) if "ss_num_train_images" in header \
        else "not recorded"
    digest = f" (weights digest {get('sidestep_base_model_digest')})" if "sidestep_base_model_digest" in header else ""
    rows = [
        ("adapter", f"{get('adapter_type')}, {size}"),
        ("base model", get("ss_base_model_version", "not recorded") + digest),
        ("trained on", trained_on),
        ("training", f"{get('ss_steps')} steps, epoch {get('ss_epoch')}, {get('ss_optimizer')} lr "
                     f"{get('ss_learning_rate')}"),
        ("trigger tag", f"**{get('sidestep_trigger_tag')}**: put it in your caption to call the style up"
         if header.get("sidestep_trigger_tag") else "none (the captions were used as they are)"),
        ("recommended strength", "1.0, the strength it was trained and sampled at; lower it (0.5 to 0.8) if the "
                                 "style drowns your prompt"),
        ("made by", f"Side-Step {get('sidestep_version')}"),
    ]
    lines = [f"# {md_text(name)}", "", "An adapter for ACE-Step 1.5. Every `.safetensors` file here carries these "
             "facts in its header.", "", "| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows), ""]
    lines += ["## Samples", ""]
    lines += [f"- {md_text(prompt)}: {md_link('listen', link)}" for prompt, link in samples] or \
             ["No samples were rendered with these weights."]
    lines += ["", "## Files", "", "| program | file |", "|---|---|"]
    lines += [f"| {PROGRAMS.get(key, md_text(key))} | {md_link(entry['path'], entry['path'])} |"
              for key, entry in formats.items()]
    return "\n".join(lines) + "\n"


def _json(text: str) -> dict:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
