"""Generation with diffusers' `AceStepPipeline`, built from the same model config and loaders as training and
preprocessing, around whichever DiT the caller brings (a fresh one with an adapter, or the one being trained).

Every render gets its own generator seeded from `seed`, so the same prompt and seed give the same audio with and
without the adapter, and rendering draws nothing from the global random state.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler
from omegaconf import DictConfig

from sidestep.atomic import atomic_file
from sidestep.config.schema import SamplePrompt
from sidestep.data.audio import SAMPLE_RATE, write_wav
from sidestep.models.source import ModelSource


def slug(prompt: SamplePrompt, limit: int = 40) -> str:
    """A file-name-safe start of the prompt: "Warm, lo-fi piano!" -> "warm_lo_fi_piano"."""
    words = "".join(c if c.isalnum() else " " for c in prompt.prompt.lower()).split()
    return "_".join(words)[:limit].rstrip("_") or "sample"


@dataclass(frozen=True)
class RenderSettings:
    duration: float
    seed: int
    steps: int
    guidance: float
    shift: float


def render_settings(node: DictConfig, model_cfg: DictConfig) -> RenderSettings:
    """`node`'s steps/guidance/shift, each falling back to the variant's own default."""
    defaults = model_cfg.sampling
    pick = lambda key: defaults[key] if node[key] is None else node[key]  # noqa: E731
    return RenderSettings(float(node.duration), int(node.seed), int(pick("steps")), float(pick("guidance")),
                          float(pick("shift")))


def build_pipeline(source: ModelSource, transformer: torch.nn.Module, dtype: torch.dtype) -> AceStepPipeline:
    """The pipeline around `transformer`; the VAE, text encoder and condition encoder are loaded on the CPU."""
    text_encoder, tokenizer = source.text_encoder(dtype)
    return AceStepPipeline(vae=source.vae(dtype), text_encoder=text_encoder, tokenizer=tokenizer,
                           transformer=transformer, condition_encoder=source.condition_encoder(dtype),
                           scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0))


def move_helpers(pipe: AceStepPipeline, device: torch.device) -> None:
    """Move everything but the DiT (which its owner places) to `device`."""
    for module in (pipe.vae, pipe.text_encoder, pipe.condition_encoder):
        module.to(device)


@torch.no_grad()
def render(pipe: AceStepPipeline, prompt: SamplePrompt, settings: RenderSettings, strength: Optional[float] = 1.0
           ) -> torch.Tensor:
    """[2, S] float audio at 48 kHz. `strength` scales the adapter; None renders without it."""
    device = next(pipe.transformer.parameters()).device
    generator = torch.Generator(device).manual_seed(settings.seed)
    has_adapter = getattr(pipe.transformer, "_hf_peft_config_loaded", False)
    if has_adapter and strength is None:
        pipe.transformer.disable_adapters()
    try:
        audio = pipe(prompt=prompt.prompt, lyrics=prompt.lyrics, vocal_language=prompt.language,
                     audio_duration=settings.duration, num_inference_steps=settings.steps,
                     guidance_scale=settings.guidance, shift=settings.shift, bpm=prompt.bpm, keyscale=prompt.keyscale,
                     timesignature=prompt.timesignature, generator=generator,
                     attention_kwargs=None if strength in (None, 1.0) else {"scale": strength}).audios
    finally:
        if has_adapter and strength is None:
            pipe.transformer.enable_adapters()
    return audio[0].float().cpu()


def save_sample(audio: torch.Tensor, path: Path, prompt: SamplePrompt, settings: RenderSettings, record: dict) -> Path:
    """`<path>.wav` plus `<path>.json` with every setting needed to render it again."""
    wav = path.parent / f"{path.name}.wav"
    write_wav(wav, audio)
    details = {**asdict(prompt), **asdict(settings), **record, "sample_rate": SAMPLE_RATE,
               "seconds": audio.shape[-1] / SAMPLE_RATE}
    with atomic_file(path.parent / f"{path.name}.json") as tmp:
        tmp.write_text(json.dumps(details, indent=2))
    return wav
