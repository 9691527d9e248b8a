"""A song several tiles long encodes, tile by tile, to the latents of encoding it whole."""

import pytest
import torch
from diffusers import AutoencoderOobleck
from diffusers.models.autoencoders.autoencoder_oobleck import OobleckDiagonalGaussianDistribution

from sidestep.preprocessing.encoding import encode_latents

HOP = 1920  # 48 kHz -> 25 latent frames/s, as the real VAE


def narrow_vae() -> AutoencoderOobleck:
    """The tiny VAE's geometry (strides, dilations, so its receptive field) with 8 channels instead of 128:
    the same stitching problem at a fraction of the cost."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoencoderOobleck(encoder_hidden_size=8, downsampling_ratios=[2, 4, 4, 6, 10],
                                  channel_multiples=[1, 1, 1, 1, 1], decoder_channels=4, decoder_input_channels=4,
                                  audio_channels=2, sampling_rate=48000).eval()


@pytest.fixture(scope="module")
def vae():
    return narrow_vae()


def test_tiled_encoding_equals_whole_song_encoding(vae, monkeypatch):
    # The latent distribution's mean instead of a draw, so tiles and the whole song are comparable.
    monkeypatch.setattr(OobleckDiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)
    audio = 0.1 * torch.randn(2, 50 * HOP, generator=torch.Generator().manual_seed(1))  # 2 s, 50 frames
    windows = []
    real_encode = vae.encode
    monkeypatch.setattr(vae, "encode", lambda x: windows.append(x.shape[-1]) or real_encode(x))
    with torch.no_grad():
        # 0.8 s tiles with 0.25 s of context per side: an 8-frame core, 6 frames of context each side.
        tiled = encode_latents(vae, audio, tile_seconds=0.8, overlap_seconds=0.25, generator=torch.Generator())
        whole = real_encode(audio.unsqueeze(0)).latent_dist.mean[0].T
    assert len(windows) == 7 and max(windows) == 20 * HOP  # several tiles, each core + 2 x context
    assert tiled.shape == whole.shape == (50, 4)
    assert (tiled - whole).abs().max() < 1e-4 * whole.abs().max()  # float rounding only


def test_encoding_draws_from_the_given_generator(vae):
    """Preprocessing is reproducible: the latent sample comes from the seeded generator, not the global RNG."""
    audio = 0.1 * torch.randn(2, 10 * HOP, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first, second, other = (encode_latents(vae, audio, 0.8, 0.25, torch.Generator().manual_seed(seed))
                                for seed in (0, 0, 1))
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_a_bf16_vae_encodes_float32_audio():
    """preprocess.precision=bf16: the audio is cast to the VAE's dtype, the latents come back as float32."""
    audio = 0.1 * torch.randn(2, 10 * HOP, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        latents = encode_latents(narrow_vae().to(torch.bfloat16), audio, 0.8, 0.25, torch.Generator())
    assert latents.dtype == torch.float32 and latents.shape == (10, 4)
