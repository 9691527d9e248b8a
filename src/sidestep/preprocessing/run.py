"""Preprocessing, top to bottom: find songs -> skip the up-to-date ones -> pass 1 (loudness, VAE + text encoder)
-> free them -> pass 2 (condition encoder) -> manifest.

Two passes keep one big model in memory at a time. Pass 1 leaves one staging file per song in
`<out_dir>/.staging/`; pass 2 turns each into the finished sample and deletes it. Every file is written under a
temporary name and renamed, so an interrupted run loses nothing and the next run carries on where it stopped.
Nothing here prints: the caller passes in how each pass's progress is shown and reports the outcome.
"""

import gc
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

import torch
from omegaconf import DictConfig
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from sidestep.atomic import atomic_file
from sidestep.config.choices import Normalize
from sidestep.data.audio import SAMPLE_RATE, AudioError, audio_seconds, load_audio
from sidestep.data.dataset import MANIFEST
from sidestep.data.samples import METADATA_KEY
from sidestep.devices import compute_dtype, pick_device
from sidestep.errors import DataError
from sidestep.models.source import ModelSource, model_source
from sidestep.preprocessing.encoding import (
    condition_pipeline,
    encode_condition,
    encode_latents,
    encode_text,
    text_pipeline,
)
from sidestep.preprocessing.loudness import normalize
from sidestep.preprocessing.songs import Failure, Song, find_songs, reason_of

log = logging.getLogger(__name__)
STAGING = ".staging"


class FileCounter(Protocol):
    """One pass's progress display: entered around the pass, told each file done and its seconds of audio."""

    def __enter__(self) -> "FileCounter": ...
    def __exit__(self, *exc) -> None: ...
    def advance(self, seconds: float, name: str) -> None: ...


ShowPass = Callable[[str, Sequence[float]], FileCounter]  # (the pass's title, each file's seconds) -> its display


@dataclass
class Outcome:
    out_dir: Path
    processed: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # already up to date
    failed: List[Failure] = field(default_factory=list)

    @property
    def usable(self) -> int:
        return len(self.processed) + len(self.skipped)


def preprocess(settings: DictConfig, model_cfg: DictConfig, show_pass: ShowPass, key_prefix: str = "") -> Outcome:
    """Turn `settings.audio_dir` into training samples in `settings.out_dir` with `model_cfg`'s models; each pass's
    progress goes to the display `show_pass` makes."""
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = model_source(model_cfg)
    songs, failed = find_songs(settings, source.identity())
    if not songs and not failed:
        raise DataError(f"{settings.audio_dir}: no audio files found (WAV, FLAC, OGG or MP3)")
    outcome = Outcome(out_dir, failed=failed)
    todo = []
    for song in songs:
        if not settings.force and _matches(out_dir / f"{song.name}.safetensors", song):
            outcome.skipped.append(song.name)
        else:
            todo.append(song)
    if todo:
        device = pick_device(settings.device, f"{key_prefix}device")
        dtype = compute_dtype(settings.precision, device.type)
        log.info("preprocessing %d of %d songs on %s (%s)", len(todo), len(songs), device, str(dtype).split(".")[-1])
        with torch.inference_mode():
            staged = _first_pass(todo, out_dir / STAGING, settings, model_cfg, source, device, dtype, show_pass, outcome)
            _free(device)
            _second_pass(staged, out_dir, model_cfg, source, device, dtype, show_pass, outcome)
            _free(device)
        if (out_dir / STAGING).is_dir() and not any((out_dir / STAGING).iterdir()):
            (out_dir / STAGING).rmdir()
    done = set(outcome.processed) | set(outcome.skipped)
    _write_manifest(out_dir, [s.name for s in songs if s.name in done], settings, model_cfg)
    return outcome


def _first_pass(songs: List[Song], staging: Path, settings: DictConfig, model_cfg: DictConfig, source: ModelSource,
                device: torch.device, dtype: torch.dtype, show_pass: ShowPass, outcome: Outcome
                ) -> List[Tuple[Song, Path]]:
    """Audio -> latents and label -> text/lyric states, for every song not already staged."""
    lengths = []
    for song in songs:
        try:
            lengths.append((song, min(audio_seconds(song.path), settings.max_duration)))
        except AudioError as err:
            outcome.failed.append(Failure(song.path, reason_of(err, song.path)))
    staged = [(song, staging / f"{song.name}.safetensors") for song, _ in lengths]
    todo = [(song, seconds) for (song, seconds), (_, path) in zip(lengths, staged) if not _matches(path, song)]
    if todo:
        vae = source.vae(dtype).to(device)
        pipe = text_pipeline(*source.text_encoder(dtype))
        pipe.text_encoder.to(device)
        with show_pass("pass 1/2: audio and text", [s for _, s in todo]) as progress:
            for song, seconds in todo:
                _stage(song, staging / f"{song.name}.safetensors", vae, pipe, settings, model_cfg, outcome)
                progress.advance(seconds, song.name)
        del vae, pipe
    failed = {f.path for f in outcome.failed}
    return [(song, path) for song, path in staged if song.path not in failed and path.is_file()]


def _stage(song: Song, path: Path, vae, pipe, settings: DictConfig, model_cfg: DictConfig, outcome: Outcome) -> None:
    try:
        audio = load_audio(song.path, settings.max_duration)
        loudness = {}
        if settings.normalize != Normalize.none:
            audio, levels = normalize(audio, SAMPLE_RATE, settings.normalize, settings.target_lufs, settings.target_peak_db)
            loudness = {"loudness": levels.as_dict()}
            if levels.peak_limited:
                log.warning("%s: brought to %s LUFS, not %g: more gain would lift its peak over "
                            "preprocess.target_peak_db=%g", song.path, levels.after_lufs, settings.target_lufs,
                            settings.target_peak_db)
        generator = torch.Generator(vae.device).manual_seed(int(song.source_hash[:15], 16))
        latents = encode_latents(vae, audio, settings.tile_seconds, settings.tile_overlap_seconds, generator)
        frames = latents.shape[0]
        if frames < model_cfg.arch.patch_size:
            raise AudioError(f"{song.path}: {audio.shape[-1] / SAMPLE_RATE:.3f} s is shorter than one latent patch")
        if not torch.isfinite(latents).all():
            raise DataError(f"{song.path}: the VAE gave NaN or Inf latents (try preprocess.precision=fp32)")
        seconds = audio.shape[-1] / SAMPLE_RATE
        tensors = {"target_latents": latents, **encode_text(pipe, song.label, seconds, settings)}
        _save(path, tensors, {"source_hash": song.source_hash, "settings_hash": song.settings_hash,
                              "duration": round(seconds, 3), **loudness})
    except DataError as err:
        outcome.failed.append(Failure(song.path, reason_of(err, song.path)))
    except torch.OutOfMemoryError:
        outcome.failed.append(Failure(song.path, "out of memory; try a smaller preprocess.tile_seconds"))


def _second_pass(staged: List[Tuple[Song, Path]], out_dir: Path, model_cfg: DictConfig, source: ModelSource,
                 device: torch.device, dtype: torch.dtype, show_pass: ShowPass, outcome: Outcome) -> None:
    """Staged tensors -> finished samples with the condition encoder; each staging file is removed when done."""
    if not staged:
        return
    pipe = condition_pipeline(source.condition_encoder(dtype).to(device))
    staged_metadata = [_metadata(path) for _, path in staged]
    durations = [m["duration"] for m in staged_metadata]
    with show_pass("pass 2/2: conditions", durations) as progress:
        for (song, path), seconds, staged_as in zip(staged, durations, staged_metadata):
            try:
                sample = encode_condition(pipe, load_file(path))
            except DataError as err:
                outcome.failed.append(Failure(song.path, reason_of(err, song.path)))
            else:
                metadata = {**song.label.metadata(), "duration": seconds, "audio_path": str(song.path),
                            "filename": song.path.name, "source_hash": song.source_hash,
                            "settings_hash": song.settings_hash, "model": model_cfg.variant,
                            **{k: staged_as[k] for k in ("loudness",) if k in staged_as}}
                _save(out_dir / f"{song.name}.safetensors", sample, metadata)
                outcome.processed.append(song.name)
            path.unlink()
            progress.advance(seconds, song.name)


def _save(path: Path, tensors: dict, metadata: dict) -> None:
    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={METADATA_KEY: json.dumps(metadata)})


def _metadata(path: Path) -> Optional[dict]:
    try:
        with safe_open(path, framework="pt") as f:
            return json.loads((f.metadata() or {}).get(METADATA_KEY, "null"))
    except (SafetensorError, OSError, json.JSONDecodeError):
        return None


def _matches(path: Path, song: Song) -> bool:
    """True when `path` holds this song's tensors for the same audio content and the same settings."""
    if not path.is_file():
        return False
    found = _metadata(path) or {}
    return found.get("source_hash") == song.source_hash and found.get("settings_hash") == song.settings_hash


def _write_manifest(out_dir: Path, names: List[str], settings: DictConfig, model_cfg: DictConfig) -> None:
    if not names:
        return
    samples = [f"{name}.safetensors" for name in names]
    manifest = {"metadata": {"generator": "sidestep.preprocess", "audio_dir": settings.audio_dir,
                             "model": model_cfg.variant},
                "samples": samples, "num_samples": len(names)}
    if settings.normalize != Normalize.none:  # each sample's levels before and after, as its file records them
        manifest["loudness"] = {s: (_metadata(out_dir / s) or {}).get("loudness") for s in samples}
    with atomic_file(out_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
