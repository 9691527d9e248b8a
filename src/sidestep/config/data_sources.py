"""The data group (`data=`): what every source shares (how its samples are loaded) and one dataclass per source in
`DATA_SCHEMAS`. A source is its schema: `instantiate(cfg.data)` builds the dataclass its `_target_` names, whose
`folders` says where its samples are; the rest of the code asks it whether it is generated demo data, its name in
words, its checks and its paths. Nothing here imports torch: a refused config is refused before it loads.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Optional

from omegaconf import MISSING, OmegaConf

from sidestep.config.choices import OnProblem
from sidestep.errors import ConfigError

if TYPE_CHECKING:
    from sidestep.data.samples import SampleShape


@dataclass(frozen=True)
class SampleDir:
    """One folder of samples of a run: its name in the summary, report and fingerprint, and its repeats an epoch."""

    name: str
    path: Path
    repeats: int = 1


@dataclass
class SyntheticConfig:
    """A small generated dataset the tiny model can learn; written once to a cache folder."""

    num_samples: int = 8
    seconds: float = 4.0
    styles: int = 4
    text_tokens: int = 16
    seed: int = 0
    cache_dir: Optional[str] = None  # default: the user cache folder


@dataclass
class DataConfig:
    """The knobs here say how a source's samples are loaded. Each source is a subclass in `DATA_SCHEMAS` with its own
    knobs whose `_target_` names itself, so `instantiate(cfg.data)` builds it; it says where its samples are
    (`folders`) and what the rest of the code needs to know about it: whether it is generated demo data, its name in
    words, its checks, its paths."""

    _target_: str = MISSING
    crop_seconds: Optional[float] = None
    num_workers: Optional[int] = None  # null: the CPU cores this process may use, less one, at most 4
    pin_memory: bool = True
    prefetch_factor: int = 2
    persistent_workers: bool = True
    on_bad_sample: OnProblem = OnProblem.error  # what an unusable sample file does
    bucket_by_length: bool = True  # without crop_seconds: batch songs of similar length, so no frame is padding
    val_fraction: float = 0.0  # held out, scored at fixed timesteps and noise so runs compare

    generated: ClassVar[bool] = False  # Side-Step makes these samples (the demo's), they are not the user's songs

    @staticmethod
    def paths(data: Any) -> List[str]:
        """Its keys (under `data.`) that hold paths: made absolute, and pinned by `sidestep.rerun`."""
        return []

    @staticmethod
    def words(data: Dict[str, Any]) -> str:
        """The source in a few words, for the report (`data` as saved: a plain dict)."""
        raise NotImplementedError

    @staticmethod
    def check(data: Any, preprocessing: bool) -> None:
        """Its own knobs, before anything heavy (`preprocessing`: `preprocess.audio_dir` makes the samples first);
        a `ConfigError` naming the key."""

    def folders(self, shape: "SampleShape") -> List[SampleDir]:
        """Its folders of samples for a model whose samples have this shape (built by `instantiate(cfg.data)`)."""
        raise NotImplementedError


@dataclass
class DatasetEntry:
    """One folder of a mix (`data.datasets`): its samples are seen `repeats` times an epoch."""

    dir: str = MISSING  # a folder of preprocessed samples
    repeats: int = 1
    name: Optional[str] = None  # how the summary, report and fingerprint call it; default: the folder's name


@dataclass
class SampleFolders(DataConfig):
    """`data=tensors`: preprocessed samples in `dataset_dir`, or a mix of folders in `datasets` (each with repeats)."""

    _target_: str = "sidestep.config.data_sources.SampleFolders"
    dataset_dir: Optional[str] = None  # a folder of preprocessed samples (.pt or .safetensors)
    datasets: List[DatasetEntry] = field(default_factory=list)  # several folders, each seen `repeats` times an epoch

    @staticmethod
    def paths(data: Any) -> List[str]:
        return ["dataset_dir", *(f"datasets.{i}.dir" for i in range(len(data.get("datasets") or [])))]

    @staticmethod
    def words(data: Dict[str, Any]) -> str:
        if data.get("datasets"):
            return " + ".join(f"{entry_name(e)} x{e.get('repeats', 1)}" for e in data["datasets"])
        return str(data.get("dataset_dir"))

    @staticmethod
    def check(data: Any, preprocessing: bool) -> None:
        if data.datasets:
            _refuse(not preprocessing, "data.datasets", "preprocess.audio_dir makes one folder of samples; preprocess "
                    "each folder with python -m sidestep.preprocess, then list the folders in data.datasets")
            _refuse(data.dataset_dir is None, "data.datasets", "give data.dataset_dir (one folder) or data.datasets "
                    "(a mix), not both")
            names = [entry_name(e) for e in data.datasets]
            for i, entry in enumerate(data.datasets):
                key = f"data.datasets[{i}]"
                _refuse(entry.repeats >= 1, f"{key}.repeats", f"must be at least 1 (got {entry.repeats})")
                _refuse(Path(entry.dir).is_dir(), f"{key}.dir", f"{entry.dir} is not a folder of preprocessed samples")
                _refuse(names[i] not in names[:i], f"{key}.name", f"{names[i]!r} also names data.datasets"
                        f"[{names.index(names[i])}]; give each folder its own name")
            return
        if preprocessing:
            return
        _refuse(data.dataset_dir is not None, "data.dataset_dir",
                "is not set; point it at a folder of preprocessed samples (or preprocess.audio_dir at your songs), "
                "or try experiment=demo")
        _refuse(Path(data.dataset_dir).is_dir(), "data.dataset_dir",
                f"{data.dataset_dir} is not a folder; point it at your preprocessed tensors, or try experiment=demo")

    def folders(self, shape: "SampleShape") -> List[SampleDir]:
        if self.datasets:
            return [SampleDir(entry_name(e), Path(e["dir"]), e["repeats"]) for e in self.datasets]
        return [SampleDir(Path(self.dataset_dir).name, Path(self.dataset_dir))]


def entry_name(entry: Any) -> str:
    """A mix folder's name: its `name`, else the folder's own."""
    return entry.get("name") or Path(str(entry.get("dir"))).name


@dataclass
class SyntheticSamples(DataConfig):
    """`data=synthetic`: the demo's generated dataset (`synthetic.*`), written once to a cache folder."""

    _target_: str = "sidestep.config.data_sources.SyntheticSamples"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    generated: ClassVar[bool] = True

    @staticmethod
    def paths(data: Any) -> List[str]:
        return ["synthetic.cache_dir"]

    @staticmethod
    def words(data: Dict[str, Any]) -> str:
        s = data.get("synthetic") or {}
        return f"synthetic: {s.get('num_samples')} generated songs of {s.get('seconds')} s"

    @staticmethod
    def check(data: Any, preprocessing: bool) -> None:
        s = data.synthetic
        for key in ("num_samples", "styles", "text_tokens"):
            _refuse(s[key] >= 1, f"data.synthetic.{key}", f"must be at least 1 (got {s[key]})")
        _refuse(s.seconds > 0, "data.synthetic.seconds", f"must be > 0 (got {s.seconds})")
        _refuse(0 <= s.seed <= 2**32 - 1, "data.synthetic.seed", f"must be between 0 and {2**32 - 1} (got {s.seed})")
        _refuse(s.cache_dir is None or not Path(s.cache_dir).exists() or Path(s.cache_dir).is_dir(),
                "data.synthetic.cache_dir", f"{s.cache_dir} is a file; give a folder (or leave it null)")

    def folders(self, shape: "SampleShape") -> List[SampleDir]:
        from sidestep.data.synthetic import synthetic_dataset  # generating imports torch: only when a run trains

        return [SampleDir("synthetic", synthetic_dataset(OmegaConf.create(self.synthetic), shape))]


DATA_SCHEMAS = {"tensors": SampleFolders, "synthetic": SyntheticSamples}


def data_schema(data: Any) -> type:
    """The schema of the source `data._target_` names (`data` typed, or as saved: a plain dict)."""
    target = data.get("_target_")
    return next((s for s in DATA_SCHEMAS.values() if s._target_ == target), SampleFolders)


def _refuse(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")
