"""The dataset and data loader a config describes, shared by training and the sensitivity estimate."""

import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from sidestep.config import LATENT_FPS
from sidestep.config.build import build
from sidestep.config.data_sources import SampleDir
from sidestep.data.collate import CropCollate
from sidestep.data.dataset import LatentDataset
from sidestep.data.sampler import EpochSampler
from sidestep.data.samples import sample_shape


def dataset_folders(cfg: DictConfig, source=None) -> List[SampleDir]:
    """The folders of samples the config trains on (`data._target_` says where they come from); `source`: that
    data source when the caller has built it already."""
    return (source or build(cfg.data)).folders(sample_shape(cfg.model))


def dataset_folder(cfg: DictConfig, source=None) -> Path:
    """The first folder (of a mix, the first listed: your songs), whose captions and lengths the samples take."""
    return dataset_folders(cfg, source)[0].path


def open_dataset(cfg: DictConfig, source=None) -> LatentDataset:
    """Every file is checked against the model's sample layout before any weight is loaded."""
    shape = sample_shape(cfg.model)
    return LatentDataset.mixed([(d.name, d.repeats, LatentDataset(d.path, shape, cfg.data.on_bad_sample))
                                for d in dataset_folders(cfg, source)])


def default_workers() -> int:
    """`data.num_workers=null`: a worker per core this process may use, one core left to training, at most 4
    (more workers than cores only makes PyTorch warn and the processes fight)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(4, cores - 1))


def make_loader(cfg: DictConfig, dataset: LatentDataset, device_type: str) -> Tuple[DataLoader, EpochSampler]:
    tr, data = cfg.trainer, cfg.data
    bucketed = data.crop_seconds is None and data.bucket_by_length and tr.batch_size > 1
    sampler = EpochSampler(len(dataset), tr.seed, lengths=dataset.frames if bucketed else None, batch_size=tr.batch_size,
                           repeats=dataset.repeats)
    workers = data.num_workers if data.num_workers is not None else default_workers()
    workers = 0 if sys.platform == "win32" else workers  # worker processes re-import torch there: slow
    crop_frames = None if data.crop_seconds is None else int(data.crop_seconds * LATENT_FPS)
    loader = DataLoader(
        dataset, batch_size=tr.batch_size, sampler=sampler, num_workers=workers,
        collate_fn=CropCollate(tr.seed, crop_frames, cfg.model.arch.patch_size, shortest=bucketed),
        pin_memory=data.pin_memory and device_type == "cuda",
        persistent_workers=data.persistent_workers and workers > 0,
        prefetch_factor=data.prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(tr.seed),  # iterators draw worker seeds here, not from the global RNG
    )
    return loader, sampler


def release_workers(*loaders: Optional[DataLoader]) -> None:
    """Stop the loaders' worker processes now, once a run is done with them. Left to the garbage collector (the
    loaders sit in reference cycles through Accelerate), each worker costs 5 s: its queues are finalized before the
    iterator, so the stop message never reaches it and PyTorch waits out the join timeout before killing it."""
    for loader in filter(None, loaders):
        iterator = loader._iterator  # a persistent-workers loader keeps its iterator here
        if hasattr(iterator, "_shutdown_workers"):  # one with workers (none: num_workers=0, or never iterated)
            iterator._shutdown_workers()
        loader._iterator = None
