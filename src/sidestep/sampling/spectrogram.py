"""A mel spectrogram picture of a sample for TensorBoard, so a style's change can be seen as well as heard."""

import numpy as np
import torch
from matplotlib import colormaps

N_FFT, HOP, BANDS, RANGE_DB = 2048, 512, 128, 80.0


def mel_filterbank(sample_rate: int, n_fft: int = N_FFT, bands: int = BANDS) -> np.ndarray:
    """[bands, n_fft // 2 + 1] triangular filters evenly spaced on the HTK mel scale."""
    mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(0.0), mel(sample_rate / 2), bands + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - low) / np.maximum(centre - low, 1e-9)
    falling = (high - bins) / np.maximum(high - centre, 1e-9)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def mel_image(audio: torch.Tensor, sample_rate: int) -> np.ndarray:
    """[channels, S] audio -> an HxWx3 uint8 image: low frequencies at the bottom, 80 dB of range."""
    mono = audio.float().mean(dim=0)
    power = torch.stft(mono, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True).abs().pow(2).numpy()
    db = 10.0 * np.log10(mel_filterbank(sample_rate) @ power + 1e-10)
    scaled = np.clip((db - db.max() + RANGE_DB) / RANGE_DB, 0.0, 1.0)[::-1]
    return (colormaps["magma"](scaled)[..., :3] * 255).astype(np.uint8)
