"""The samples of a run, arranged for listening: one row per prompt, its renders across checkpoints, the same seed
without the adapter and at other strengths where `sidestep.sample compare=true` made them.

Each sample is a WAV with a JSON of its settings beside it (written by training's sampler and by `sidestep.sample`);
the JSON says which is which: training samples carry the `step`, `sidestep.sample` the `source` it loaded, and a
render without the adapter has no `adapter` entry.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile
from matplotlib import image

from sidestep.atomic import atomic_file

ASSETS = "report_files"  # pictures of the page, beside it; never copies of the audio
MAX_PICTURE_WIDTH = 480  # spectrogram columns kept: enough to see the structure, small on disk


@dataclass
class Sample:
    wav: Path  # relative to the run
    info: dict

    @property
    def step(self) -> Optional[int]:
        return self.info.get("step")

    @property
    def without_adapter(self) -> bool:
        return "source" in self.info and "adapter" not in self.info

    @property
    def strength(self) -> float:
        return float(self.info.get("strength") or 0.0)

    def source_label(self, run: Path) -> str:
        """Which weights made it: "step 150" for a checkpoint, "final adapter" for the run's adapter."""
        source = Path(self.info.get("source", ""))
        if source.name.startswith("step-") and source.name[5:].isdigit():
            return f"step {int(source.name[5:])}"
        return "final adapter"


@dataclass
class PromptRow:
    prompt: str
    lyrics: str
    by_step: List[Sample]  # training-time samples, oldest first
    without: Optional[Sample]  # same prompt and (preferably) seed, no adapter
    strengths: Dict[str, List[Sample]]  # source label -> renders at each strength, weakest first


def read_samples(run: Path) -> List[Sample]:
    found = []
    for info_file in sorted((run / "samples").glob("**/*.json")):
        wav = info_file.with_suffix(".wav")
        try:
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            continue  # a sample being written, or not one of ours
        if wav.is_file() and isinstance(info, dict) and "prompt" in info:
            found.append(Sample(wav.relative_to(run), info))
    return found


def prompt_rows(run: Path, samples: List[Sample]) -> List[PromptRow]:
    rows: Dict[Tuple[str, str], PromptRow] = {}
    bases: Dict[Tuple[str, str], List[Sample]] = {}
    for sample in samples:
        key = (sample.info["prompt"], sample.info.get("lyrics", ""))
        row = rows.setdefault(key, PromptRow(key[0], key[1], [], None, {}))
        if sample.step is not None:
            row.by_step.append(sample)
        elif sample.without_adapter:
            bases.setdefault(key, []).append(sample)
        else:
            row.strengths.setdefault(sample.source_label(run), []).append(sample)
    for key, row in rows.items():
        row.by_step.sort(key=lambda s: s.step)
        row.without = _base(bases.get(key, []), {s.info.get("seed") for s in row.by_step},
                            {s.info.get("duration") for s in row.by_step})
        for renders in row.strengths.values():
            renders.sort(key=lambda s: s.strength)
    return list(rows.values())


def _base(candidates: List[Sample], seeds: set, durations: set) -> Optional[Sample]:
    """The newest render without the adapter, preferably at a seed and a length the training samples used (a row
    plays at one length); None when every one is of another length than the row's."""
    same_length = [s for s in candidates if not durations or s.info.get("duration") in durations]
    same_seed = [s for s in same_length if s.info.get("seed") in seeds]
    return (same_seed or same_length or [None])[-1]


def spectrogram(run: Path, wav: Path) -> Path:
    """`report_files/<wav path>.png` (relative to the run), drawn once and redrawn only when the WAV is newer."""
    picture = Path(ASSETS) / wav.with_suffix(".png")
    target, source = run / picture, run / wav
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return picture
    import torch  # here, not at the top: a report of runs without samples never loads torch

    from sidestep.sampling.spectrogram import mel_image

    audio, rate = soundfile.read(str(source), dtype="float32", always_2d=True)
    pixels = mel_image(torch.from_numpy(audio.T.copy()), rate)
    columns = np.linspace(0, pixels.shape[1] - 1, min(pixels.shape[1], MAX_PICTURE_WIDTH)).round().astype(int)
    with atomic_file(target) as tmp:
        image.imsave(tmp, pixels[:, columns], format="png")
    return picture
