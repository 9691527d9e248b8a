"""The arithmetic of preprocessing: audio -> latents (VAE, in tiles), label -> text and lyric states (text
encoder), and both -> the DiT's condition and context (condition encoder).

Text, lyrics, the timbre reference and the context latents are made by diffusers' `AceStepPipeline` methods,
the code that runs at generation time, so what the LoRA trains on is what it will be given when it plays.
"""

import math
from typing import Dict

import torch
from diffusers import AceStepPipeline, AutoencoderOobleck
from diffusers.pipelines.ace_step import AceStepConditionEncoder
from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sidestep.errors import DataError
from sidestep.preprocessing.labels import Label

TIMBRE_REFERENCE_SECONDS = 30  # the silence reference the pipeline gives the timbre encoder when there is no audio


def encode_latents(vae: AutoencoderOobleck, audio: torch.Tensor, tile_seconds: float, overlap_seconds: float,
                   generator: torch.Generator) -> torch.Tensor:
    """[2, S] audio -> [T, C] latents (T = S // hop). Long audio goes through the VAE in windows of
    `tile_seconds`, each with `overlap_seconds` of context per side that is encoded and thrown away, so memory
    does not grow with the song's length."""
    hop = math.prod(vae.config.downsampling_ratios)
    rate = vae.config.sampling_rate
    frames = audio.shape[-1] // hop
    core = max(1, round((tile_seconds - 2 * overlap_seconds) * rate / hop))
    context = round(overlap_seconds * rate / hop)
    device, dtype = vae.device, vae.dtype
    pieces = []
    for start in range(0, frames, core):
        stop = min(start + core, frames)
        first, last = max(0, start - context), min(frames, stop + context)
        window = audio[:, first * hop:last * hop].unsqueeze(0).to(device=device, dtype=dtype)
        latents = vae.encode(window).latent_dist.sample(generator=generator)
        pieces.append(latents[0, :, start - first:stop - first].float().cpu())
    return torch.cat(pieces, dim=1).T.contiguous()


def text_pipeline(text_encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> AceStepPipeline:
    """A pipeline holding only the text encoder: its `encode_prompt` formats and encodes as generation does."""
    return AceStepPipeline(vae=None, text_encoder=text_encoder, tokenizer=tokenizer, transformer=None,
                           condition_encoder=None, scheduler=None)


def encode_text(pipe: AceStepPipeline, label: Label, seconds: float, settings: DictConfig) -> Dict[str, torch.Tensor]:
    """The caption prompt through the whole text encoder, the lyrics through its token embeddings only."""
    device = pipe.text_encoder.device
    text, text_mask, lyrics, lyric_mask = pipe.encode_prompt(
        prompt=label.caption, lyrics=label.lyrics, device=device, vocal_language=label.language,
        audio_duration=seconds, bpm=label.bpm, keyscale=label.keyscale, timesignature=label.timesignature,
        max_text_length=settings.max_text_tokens, max_lyric_length=settings.max_lyric_tokens)
    return {"text_hidden_states": text[0].float().cpu(), "text_attention_mask": text_mask[0].cpu(),
            "lyric_hidden_states": lyrics[0].float().cpu(), "lyric_attention_mask": lyric_mask[0].cpu()}


def condition_pipeline(condition_encoder: AceStepConditionEncoder) -> AceStepPipeline:
    return AceStepPipeline(vae=None, text_encoder=None, tokenizer=None, transformer=None,
                           condition_encoder=condition_encoder, scheduler=None)


def encode_condition(pipe: AceStepPipeline, first_pass: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Pass-one tensors -> the training sample (layout: data/samples.py). The timbre reference is the encoded silence, as the
    pipeline uses when no reference audio is given (ACE-Step's own training tensors used zeros instead)."""
    encoder = pipe.condition_encoder
    device, dtype = encoder.device, encoder.dtype

    def batch(key: str) -> torch.Tensor:
        value = first_pass[key].unsqueeze(0).to(device)
        return value if value.dtype == torch.bool else value.to(dtype)

    reference_frames = math.ceil(TIMBRE_REFERENCE_SECONDS * pipe.latents_per_second)
    reference = encoder.silence_latent[:, :reference_frames, :].to(device=device, dtype=dtype)
    states, mask = encoder(
        text_hidden_states=batch("text_hidden_states"), text_attention_mask=batch("text_attention_mask"),
        lyric_hidden_states=batch("lyric_hidden_states"), lyric_attention_mask=batch("lyric_attention_mask"),
        refer_audio_acoustic_hidden_states_packed=reference,
        refer_audio_order_mask=torch.zeros(1, dtype=torch.long, device=device))
    latents = first_pass["target_latents"]
    frames = latents.shape[0]
    silence, _ = pipe.prepare_src_latents(device=device, dtype=dtype, latent_length=frames)
    context = torch.cat([silence[0].float().cpu(), torch.ones(frames, latents.shape[1])], dim=1)
    sample = {"target_latents": latents, "attention_mask": torch.ones(frames),
              "encoder_hidden_states": states[0].float().cpu(), "encoder_attention_mask": mask[0].bool().cpu(),
              "context_latents": context.contiguous()}
    for key in ("target_latents", "encoder_hidden_states", "context_latents"):
        if not torch.isfinite(sample[key]).all():
            raise DataError(f"{key} came out NaN or Inf (try preprocess.precision=fp32)")
    return sample
