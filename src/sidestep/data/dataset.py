"""A folder of preprocessed samples as a map-style dataset, checked file by file when it is opened."""

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.utils.data import Dataset

from sidestep.config import LATENT_FPS
from sidestep.data.samples import (
    SAMPLE_SUFFIXES,
    SampleShape,
    check_sample,
    read_sample,
)
from sidestep.errors import DataError

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a name per sample: a manifest this size would list hundreds of thousands
log = logging.getLogger(__name__)


def list_sample_files(dataset_dir: Path) -> List[Path]:
    """The manifest's `samples` when present, else every `*.pt` / `*.safetensors` (minus `*.tmp.*`), sorted.
    The files themselves are checked by `check_path` and the sample reader."""
    dataset_dir = Path(dataset_dir)
    manifest = dataset_dir / MANIFEST
    if manifest.is_file():
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            raise DataError(f"{manifest}: {manifest.stat().st_size >> 20} MiB, too large to be a list of sample names; "
                            "fix or delete it")
        try:
            entries = json.loads(manifest.read_text(encoding="utf-8"))["samples"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
            raise DataError(f"{manifest}: not a manifest (expected JSON with a 'samples' list); fix or delete it") from None
        if not isinstance(entries, list) or not all(isinstance(e, str) and e and "\0" not in e for e in entries):
            raise DataError(f"{manifest}: 'samples' must be a list of file names (strings); fix or delete it")
        files = [dataset_dir / p for p in entries]  # an absolute entry stays absolute; check_path keeps it inside
        repeated = sorted({str(p) for p in files if files.count(p) > 1})
        if repeated:
            raise DataError(f"{manifest}: lists {repeated[0]} more than once; each sample must appear once")
        missing = [str(p) for p in files if not p.is_file() and not p.is_symlink()]
        if missing:
            raise DataError(f"{manifest}: lists {len(missing)} missing file(s), e.g. {missing[0]}; fix or delete the manifest")
    else:
        files = sorted(p for p in dataset_dir.iterdir()
                       if p.suffix in SAMPLE_SUFFIXES and ".tmp" not in p.name and not p.name.startswith("."))
    if not files:
        raise DataError(f"{dataset_dir}: no .pt or .safetensors samples found; run sidestep.preprocess first, "
                        "or try experiment=demo")
    return files


def check_path(path: Path, dataset_dir: Path, listed: bool) -> None:
    """A sample path must lead to a regular file, with a name every tool can print. A manifest's entry (`listed`)
    must also lead inside the dataset folder, through any symlinks: a manifest never makes us read elsewhere."""
    shown = printable(path)
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{shown}: the file name is not valid UTF-8; rename it") from None
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # a dangling link (FileNotFoundError), a loop (OSError/RuntimeError)
        what = "a broken symlink" if isinstance(err, FileNotFoundError) else "a symlink loop"
        raise DataError(f"{shown}: {what}; fix or remove it") from None
    if listed and Path(dataset_dir).resolve() not in real.parents:
        raise DataError(f"{shown}: leads outside the dataset folder (to {printable(real)}); samples must lie inside "
                        f"{printable(dataset_dir)}")
    if not real.is_file():
        raise DataError(f"{shown}: not a regular file")


def printable(path: Path) -> str:
    """A path as text any console can show (undecodable bytes of a file name replaced)."""
    return os.fsencode(path).decode("utf-8", "replace")


class LatentDataset(Dataset):
    """Items are `(epoch, index)` keys from `EpochSampler`, so cropping can be seeded per epoch and sample.

    Every file is read and checked when the dataset opens, and all problems are reported together:
    `on_bad_sample="error"` stops, `"skip"` trains on the usable files and says how many were left out.
    Several folders make one dataset with `mixed`: each sample keeps its folder (`origin`, an index into `folders`)
    and that folder's `repeats` (times an epoch the sampler gives it)."""

    def __init__(self, dataset_dir: Path, shape: SampleShape, on_bad_sample: str = "error"):
        self.files, self.frames, problems = [], [], []
        listed = (Path(dataset_dir) / MANIFEST).is_file()
        for path in list_sample_files(dataset_dir):
            try:
                check_path(path, dataset_dir, listed)
                sample = read_sample(path)
                check_sample(path, sample, shape)
            except DataError as err:
                problems.append(str(err))
                continue
            self.files.append(path)
            self.frames.append(int(sample["target_latents"].shape[0]))
        if problems and (on_bad_sample == "error" or not self.files):
            if len(problems) == 1:
                raise DataError(problems[0])
            raise DataError(f"{len(problems)} unusable sample files in {dataset_dir} "
                            f"(data.on_bad_sample=skip trains on the rest):\n  " + "\n  ".join(problems))
        if problems:
            log.warning("skipping %d unusable sample file(s) of %d:\n  %s", len(problems),
                        len(problems) + len(self.files), "\n  ".join(problems))
        self.folders, self.origin, self.repeats = [Path(dataset_dir).name], [0] * len(self.files), [1] * len(self.files)

    @classmethod
    def mixed(cls, parts: List[Tuple[str, int, "LatentDataset"]]) -> "LatentDataset":
        """(name, repeats, folder's dataset) of each folder, in order, as one dataset; one folder is itself."""
        if len(parts) == 1 and parts[0][1] == 1:
            parts[0][2].folders = [parts[0][0]]
            return parts[0][2]
        mix = object.__new__(LatentDataset)
        mix.folders = [name for name, _, _ in parts]
        mix.files = [f for _, _, part in parts for f in part.files]
        mix.frames = [n for _, _, part in parts for n in part.frames]
        mix.origin = [k for k, (_, _, part) in enumerate(parts) for _ in part.files]
        mix.repeats = [repeats for _, repeats, part in parts for _ in part.files]
        return mix

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, Any]:
        epoch, index = key
        sample = read_sample(self.files[index])
        sample.update(epoch=epoch, index=index, name=self.sample_name(index))
        return sample

    def sample_name(self, index: int) -> str:
        """The file's name, with its folder's in a mix (two folders may hold a `sample_000`)."""
        name = self.files[index].name
        return name if len(self.folders) == 1 else f"{self.folders[self.origin[index]]}/{name}"

    def split(self, fraction: float, seed: int) -> Tuple["LatentDataset", Optional["LatentDataset"]]:
        """(train, held-out) by a seeded draw of `fraction` of the files of each folder; no held-out set when
        fraction is 0. Per folder, so a mix's small folder (your songs beside a large generic set) is held out in
        proportion too, and adding a folder leaves the others' draws as they were. Held-out samples are scored
        once each, whatever their folder's repeats."""
        if fraction <= 0:
            return self, None
        train, held_out = [], []
        for k, folder in enumerate(self.folders):
            members = [i for i, origin in enumerate(self.origin) if origin == k]
            held = max(1, round(fraction * len(members)))
            if held >= len(members):
                where = "" if len(self.folders) == 1 else f" in {folder} (data.datasets[{k}])"
                raise DataError(f"data.val_fraction={fraction} leaves no training sample of {len(members)}{where}; "
                                "lower it")
            order = torch.randperm(len(members), generator=torch.Generator().manual_seed(seed + k)).tolist()
            train += [members[j] for j in order[held:]]
            held_out += [members[j] for j in order[:held]]
        return self._subset(sorted(train)), self._subset(sorted(held_out), once=True)

    def _subset(self, indices: List[int], once: bool = False) -> "LatentDataset":
        part = object.__new__(LatentDataset)
        part.files, part.frames = [self.files[i] for i in indices], [self.frames[i] for i in indices]
        part.folders, part.origin = self.folders, [self.origin[i] for i in indices]
        part.repeats = [1 if once else self.repeats[i] for i in indices]
        return part

    def counts(self) -> List[int]:
        """Samples of each folder, in the order of `folders`."""
        return [self.origin.count(k) for k in range(len(self.folders))]

    @property
    def mix(self) -> Optional[List[str]]:
        """Each folder with its repeats and samples, when there is more than one folder or a repeat; else None."""
        if len(self.folders) == 1 and set(self.repeats) <= {1}:
            return None
        repeats = {o: r for o, r in zip(self.origin, self.repeats)}
        return [f"{name} x{repeats.get(k, 1)}: {n} samples" for k, (name, n) in enumerate(zip(self.folders,
                                                                                          self.counts()))]

    @property
    def seconds(self) -> float:
        return sum(self.frames) / LATENT_FPS
