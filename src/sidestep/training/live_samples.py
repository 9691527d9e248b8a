"""Audio rendered while training (`sample.*`): `<run>/samples/step-<N>/` (WAV + JSON) and TensorBoard's audio
tab, so the run becomes a timeline of how the style is learned.

It never changes the training trajectory: it runs on the main process only, in eval mode without gradients,
with its own generator, and restores train mode and every random state afterwards. The VAE, text encoder and
condition encoder load on first use; with `sample.offload` they wait on the CPU between samples. A failure
(a missing `vae/` folder, out of memory) is logged with its reason and training goes on. The final adapter gets
its round too, and after each round the run's listening page (`report.html`) is written again. Each round also
keeps the adapter it was rendered with, `<run>/adapters/step-N/` (training/step_adapters.py).
"""

import logging
import random
import statistics
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from sidestep.config.schema import LATENT_FPS, SamplePrompt
from sidestep.data.audio import SAMPLE_RATE
from sidestep.data.loader import dataset_folder
from sidestep.errors import SidestepError, first_line
from sidestep.models.source import model_source
from sidestep.report.run_page import refresh_run_page
from sidestep.sampling.prompts import from_dataset
from sidestep.sampling.render import build_pipeline, move_helpers, render, render_settings, save_sample, slug
from sidestep.sampling.spectrogram import mel_image
from sidestep.training.adapter_facts import Facts
from sidestep.training.step_adapters import keep_step_adapter
from sidestep.write_errors import is_write_error

log = logging.getLogger(__name__)
MAX_DEFAULT_SECONDS = 30.0  # `sample.duration=null`: the songs' median length, but never longer than this
TRAINING_PASSES = 3  # a training step's forward and backward cost about three forward passes


def resolve_duration(cfg: DictConfig, frames: List[int]) -> float:
    """`sample.duration`, or when null the median length of the training songs (`frames` in latent frames), capped:
    samples as long as the songs, not 30 s of a 4 s style."""
    if cfg.sample.duration is None:
        cfg.sample.duration = songs_duration(frames)
    return cfg.sample.duration


def songs_duration(frames: List[int]) -> float:
    """The training songs' median length in seconds (`frames` in latent frames), at most 30 s: what samples of a
    run render by default, in training and in `sidestep.sample`."""
    return min(MAX_DEFAULT_SECONDS, statistics.median(frames) / LATENT_FPS)


def sampling_summary(cfg: DictConfig, frames: List[int], steps_per_epoch: int, total_steps: int, batch: int) -> str:
    """What sampling will add, for the summary before training: when, how much audio, and its share of the work
    (DiT passes over latent frames; the VAE and text encoder come on top)."""
    s = cfg.sample
    if not (s.every_n_steps or s.every_n_epochs):
        return "off (sample.every_n_epochs / sample.every_n_steps)"
    due = sampled_steps(cfg, steps_per_epoch, total_steps)
    prompts = len(s.prompts) or min(s.count, len(frames))
    settings = render_settings(s, cfg.model)
    render = settings.steps * (2 if settings.guidance > 1 else 1) * settings.duration * LATENT_FPS
    crop = min(statistics.mean(frames), (cfg.data.crop_seconds or float("inf")) * LATENT_FPS)
    share = len(due) * prompts * render / (total_steps * TRAINING_PASSES * batch * crop)
    when = ", ".join(map(str, sorted(due)[:4])) + (", ..." if len(due) > 4 else "")
    at = f"step {when}" if len(due) == 1 else f"{len(due)} points (steps {when})"
    return (f"{prompts} prompt{'s' if prompts != 1 else ''} x {settings.duration:g} s at {at}: about {share:.0%} "
            f"on top of training's DiT work")


def sampled_steps(cfg: DictConfig, steps_per_epoch: int, total_steps: int) -> set:
    """The steps that get a round of samples (and keep their adapter); none when sampling is off."""
    s = cfg.sample
    if not (s.every_n_steps or s.every_n_epochs):
        return set()
    due = set(range(s.every_n_steps, total_steps + 1, s.every_n_steps)) if s.every_n_steps else set()
    if s.every_n_epochs:
        due |= {e * steps_per_epoch for e in range(s.every_n_epochs, total_steps // steps_per_epoch + 1, s.every_n_epochs)}
    due.add(total_steps)  # the final adapter gets its round, also in a run shorter than the interval
    return due


class LiveSampler:
    def __init__(self, cfg: DictConfig, run_dir: Path, accelerator, writer, dtype: torch.dtype, facts: Facts = None):
        s = cfg.sample
        self.every_steps, self.every_epochs = s.every_n_steps, s.every_n_epochs
        self.main = accelerator.is_main_process
        self.enabled = self.main and bool(self.every_steps or self.every_epochs)
        self.cfg, self.run_dir, self.accelerator, self.writer, self.dtype = cfg, run_dir, accelerator, writer, dtype
        self.facts = facts or {}  # what the kept adapters' headers say (training/adapter_facts.py)
        self.settings = render_settings(s, cfg.model)
        self.pipe = None
        self.prompts: Optional[List[SamplePrompt]] = None
        self.last_step = -1  # the last step's round, if it had one, also serves `finish`
        if self.enabled and self.settings.duration * LATENT_FPS < cfg.model.arch.patch_size:
            raise SidestepError(f"sample.duration={s.duration} is shorter than one latent patch")

    def after_step(self, transformer: torch.nn.Module, step: int, epoch_ended: Optional[int]) -> None:
        """Render when `step` is due, or when the epoch that just ended (`epoch_ended`, counted from 1) is due."""
        due_step = bool(self.every_steps) and step % self.every_steps == 0
        due_epoch = bool(self.every_epochs) and epoch_ended is not None and epoch_ended % self.every_epochs == 0
        if self.enabled and (due_step or due_epoch):
            self._sample(transformer, step)

    def finish(self, transformer: torch.nn.Module, step: int) -> None:
        """At the end of training: a round for the final adapter (unless the last step had one); the caller then
        writes the adapter and the page (`write_page`)."""
        if self.enabled and step != self.last_step:
            self._sample(transformer, step, page=False)

    def write_page(self) -> None:
        if self.writer is not None:
            self.writer.flush()  # the page draws the curves from TensorBoard's files
        refresh_run_page(self.run_dir)

    def _sample(self, transformer: torch.nn.Module, step: int, page: bool = True) -> None:
        if step == self.last_step:
            return
        self.last_step = step
        started = time.perf_counter()
        model = self.accelerator.unwrap_model(transformer)
        cuda = [self.accelerator.device] if self.accelerator.device.type == "cuda" else []
        python_state, numpy_state = random.getstate(), np.random.get_state()
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=cuda), self.accelerator.autocast():
                self._render_all(model, step)
            log.info("samples for step %d in %s (%.1f s)", step, self.run_dir / "samples" / f"step-{step:07d}",
                     time.perf_counter() - started)
        except Exception as err:  # sampling is a view on training, never a reason to stop it (a full disk is)
            if is_write_error(err):
                raise
            log.warning("samples at step %d failed, training goes on: %s", step, first_line(err))
            if isinstance(err, SidestepError):  # a missing folder or dataset stays missing: stop trying
                self.enabled = False
            if cuda:
                torch.cuda.empty_cache()  # give training back what a failed sample held
        finally:
            model.train(was_training)
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            if self.cfg.sample.offload and self.pipe is not None:
                move_helpers(self.pipe, torch.device("cpu"))
        keep_step_adapter(model, self.run_dir, step, self.cfg.run.name, self.cfg.export.dtype, self.facts)
        if page:
            self.write_page()

    def _render_all(self, model: torch.nn.Module, step: int) -> None:
        if self.pipe is None:
            self.prompts = self._prompts()
            self.pipe = build_pipeline(model_source(self.cfg.model), model, self.dtype)
            self.pipe.set_progress_bar_config(disable=True)
        move_helpers(self.pipe, self.accelerator.device)
        folder = self.run_dir / "samples" / f"step-{step:07d}"
        for i, prompt in enumerate(self.prompts):
            audio = render(self.pipe, prompt, self.settings)
            name = f"{i}_{slug(prompt)}"
            save_sample(audio, folder / name, prompt, self.settings, {"step": step, "strength": 1.0,
                                                                      "model": self.cfg.model.variant})
            if self.writer is not None:
                self.writer.add_audio(f"samples/{name}", audio.mean(dim=0), step, sample_rate=SAMPLE_RATE)
                self.writer.add_image(f"spectrogram/{name}", mel_image(audio, SAMPLE_RATE), step, dataformats="HWC")

    def _prompts(self) -> List[SamplePrompt]:
        if self.cfg.sample.prompts:
            return [OmegaConf.to_object(p) for p in self.cfg.sample.prompts]
        return from_dataset(dataset_folder(self.cfg), self.cfg.sample.count)
