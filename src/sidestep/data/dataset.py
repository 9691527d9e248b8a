"""A folder of preprocessed samples as a map-style dataset, checked file by file when it is opened."""

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from torch.utils.data import Dataset

from sidestep.config import LATENT_FPS
from sidestep.data.samples import SAMPLE_SUFFIXES, SampleShape, check_sample, read_sample
from sidestep.errors import DataError

MANIFEST = "manifest.json"


def list_sample_files(dataset_dir: Path) -> List[Path]:
    """The manifest's `samples` when present, else every `*.pt` / `*.safetensors` (minus `*.tmp.*`), sorted."""
    dataset_dir = Path(dataset_dir)
    manifest = dataset_dir / MANIFEST
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text())["samples"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{manifest}: not a manifest (expected JSON with a 'samples' list); fix or delete it") from None
        files = [Path(p) if Path(p).is_absolute() else dataset_dir / p for p in entries]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DataError(f"{manifest}: lists {len(missing)} missing file(s), e.g. {missing[0]}; fix or delete the manifest")
    else:
        files = sorted(p for p in dataset_dir.iterdir()
                       if p.suffix in SAMPLE_SUFFIXES and ".tmp" not in p.name and not p.name.startswith("."))
    if not files:
        raise DataError(f"{dataset_dir}: no .pt or .safetensors samples found; run sidestep.preprocess first, "
                        "or try experiment=demo")
    return files


class LatentDataset(Dataset):
    """Items are `(epoch, index)` keys from `EpochSampler`, so cropping can be seeded per epoch and sample."""

    def __init__(self, dataset_dir: Path, shape: SampleShape):
        self.files = list_sample_files(dataset_dir)
        self.frames = []
        for path in self.files:
            sample = read_sample(path)
            check_sample(path, sample, shape)
            self.frames.append(int(sample["target_latents"].shape[0]))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, Any]:
        epoch, index = key
        sample = read_sample(self.files[index])
        sample.update(epoch=epoch, index=index, name=self.files[index].name)
        return sample

    @property
    def seconds(self) -> float:
        return sum(self.frames) / LATENT_FPS
