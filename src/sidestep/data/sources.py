"""Where the training samples come from: `data._target_` names one of these, built from the whole `data` node
(`instantiate(cfg.data)`); the rest of `data.*` says how they are loaded. A source gives its folders of samples,
each with a name and how many times an epoch its samples are seen; what the rest of the code needs to know about
a source (generated or the user's, its name in words, its checks) is on its schema (`config/parts.py`)."""

from dataclasses import dataclass
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

from sidestep.config.data_sources import entry_name
from sidestep.data.samples import SampleShape
from sidestep.data.synthetic import synthetic_dataset


@dataclass(frozen=True)
class SampleDir:
    """One folder of samples of a run: its name in the summary, report and fingerprint, and its repeats an epoch."""

    name: str
    path: Path
    repeats: int = 1


class SampleFolder:
    """`data=tensors`: preprocessed samples in `data.dataset_dir`, or the mix of folders in `data.datasets`."""

    def __init__(self, **data):
        self.dataset_dir, self.datasets = data["dataset_dir"], data["datasets"]

    def folders(self, shape: SampleShape) -> List[SampleDir]:
        if self.datasets:
            return [SampleDir(entry_name(e), Path(e["dir"]), e["repeats"]) for e in self.datasets]
        return [SampleDir(Path(self.dataset_dir).name, Path(self.dataset_dir))]


class SyntheticSamples:
    """`data=synthetic`: a generated dataset the tiny model can learn, written once to a cache folder."""

    def __init__(self, **data):
        self.settings = OmegaConf.create(data["synthetic"])

    def folders(self, shape: SampleShape) -> List[SampleDir]:
        return [SampleDir("synthetic", synthetic_dataset(self.settings, shape))]
