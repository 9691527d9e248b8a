"""Where the training samples come from: `data._target_` names one of these, built from the whole `data` node
(`instantiate(cfg.data)`); the rest of `data.*` says how they are loaded."""

from pathlib import Path

from omegaconf import OmegaConf

from sidestep.data.samples import SampleShape
from sidestep.data.synthetic import synthetic_dataset
from sidestep.errors import ConfigError


class SampleFolder:
    """`data=tensors`: preprocessed samples in `data.dataset_dir`."""

    def __init__(self, **data):
        self.dataset_dir = data["dataset_dir"]

    def folder(self, shape: SampleShape) -> Path:
        return Path(self.dataset_dir)


class SyntheticSamples:
    """`data=synthetic`: a generated dataset the tiny model can learn, written once to a cache folder."""

    def __init__(self, **data):
        if data["synthetic"] is None:
            raise ConfigError("data.synthetic: is null, which leaves the generated dataset nothing to go by; for your "
                              "own samples use data=tensors data.dataset_dir=<folder>")
        self.settings = OmegaConf.create(data["synthetic"])

    def folder(self, shape: SampleShape) -> Path:
        return synthetic_dataset(self.settings, shape)
