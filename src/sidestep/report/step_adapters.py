"""Under each training sample's player, links to the adapter kept at its step (`<run>/adapters/step-N/`, written
by training/step_adapters.py): one file per program, as its `formats.json` lists them, and the model card.

`formats.json` is read as data from the run folder: an entry whose path leaves the step's folder, or names
nothing there, is left out, so every link the page shows leads to a file inside the run."""

import json
from pathlib import Path
from typing import Optional

from sidestep.report.page import esc, href

ADAPTERS = "adapters"
CARD = "README.md"
LABELS = {"diffusers": "PEFT/diffusers", "diffusers_pipeline": "diffusers pipeline", "acestep": "ACE-Step",
          "comfyui": "ComfyUI"}


def adapter_links(run: Path, step: int) -> str:
    """HTML: the kept adapter's files for `step`, or nothing when the run kept none for it."""
    folder = Path(ADAPTERS) / f"step-{step:07d}"
    try:
        formats = json.loads((run / folder / "formats.json").read_text())
    except (OSError, ValueError):
        return ""
    links = []
    for key, entry in formats.items() if isinstance(formats, dict) else ():
        file = _file(run, folder, entry.get("path") if isinstance(entry, dict) else None)
        if file is not None:
            links.append(f'<a href="{href(file)}">{esc(LABELS.get(key, key))}</a>')
    if (run / folder / CARD).is_file():
        links.append(f'<a href="{href(folder / CARD)}">model card</a>')
    return f'<p class="meta">adapter: {" · ".join(links)}</p>' if links else ""


def _file(run: Path, folder: Path, path) -> Optional[Path]:
    """The file an entry names, relative to the run (a folder entry: its weights file); None if it leaves the
    step's folder or is not there."""
    if not isinstance(path, str):
        return None
    root = (run / folder).resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        return None
    if target.is_dir():
        target = next(iter(sorted(target.glob("*.safetensors"))), None)
    return target.relative_to(root.parent.parent) if target is not None and target.is_file() else None
