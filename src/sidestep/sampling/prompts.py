"""What to render: prompts given on the command line or in a YAML file, or else the captions and lyrics of the
songs the adapter was trained on (the most direct way to hear what it learned)."""

from pathlib import Path
from typing import List

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sidestep.config.checks import check_prompts
from sidestep.config.schema import SamplePrompt
from sidestep.config.trust import vet_file
from sidestep.config.yaml_data import load_yaml_data
from sidestep.data.dataset import list_sample_files
from sidestep.data.samples import read_sample
from sidestep.errors import ConfigError, DataError


def from_dataset(dataset_dir: Path, count: int) -> List[SamplePrompt]:
    """Up to `count` distinct captions (with their lyrics and metas) from a dataset folder, in file order."""
    prompts: List[SamplePrompt] = []
    for path in list_sample_files(Path(dataset_dir)):
        meta = read_sample(path)["metadata"]
        caption = str(meta.get("caption") or "").strip()
        if caption and caption not in {p.prompt for p in prompts}:
            prompts.append(SamplePrompt(caption, str(meta.get("lyrics") or "[Instrumental]"),
                                        str(meta.get("language") or "en"), meta.get("bpm"), meta.get("keyscale") or None,
                                        meta.get("timesignature") or None))
        if len(prompts) == count:
            break
    if not prompts:
        raise DataError(f"{dataset_dir}: no captions in the training samples' metadata; give prompt=... instead")
    return prompts


def from_file(path: Path) -> List[SamplePrompt]:
    """A YAML list of prompts: `- {prompt: warm lofi piano, lyrics: "[Instrumental]"}`, checked field by field."""
    try:
        entries = load_yaml_data(path)
        vet_file(entries, f"prompts={path}", record=True)
        typed = [OmegaConf.merge(OmegaConf.structured(SamplePrompt), entry) for entry in entries]
    except (OSError, OmegaConfBaseException, TypeError) as err:
        raise ConfigError(f"prompts={path}: not a YAML list of {{prompt: ..., lyrics: ...}} ({str(err).splitlines()[0]})") from None
    if not typed:
        raise ConfigError(f"prompts={path}: the list is empty")
    check_prompts(typed, f"prompts={path}: entry")
    return [OmegaConf.to_object(entry) for entry in typed]
