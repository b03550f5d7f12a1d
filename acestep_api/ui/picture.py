"""A picture of a song: its waveform over its spectrogram, drawn with numpy and PIL.

The page shows one per result so a song can be judged at a glance (silence, clipping, where
the energy sits) before it is played.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 960, 300
WAVE_SHARE = 0.4  # of the height, above the spectrogram
AXIS_HEIGHT = 14  # the time labels along the bottom
BACKGROUND = (17, 17, 27)
WAVE_COLOR = (255, 156, 64)
AXIS_COLOR = (190, 190, 205)
N_FFT = 2048
MIN_HZ = 30.0
# A dark-to-bright palette (black, violet, red, orange, pale yellow) for the spectrogram.
PALETTE = np.array([(0, 0, 4), (59, 15, 112), (140, 41, 129), (222, 73, 104), (254, 159, 109), (252, 253, 191)],
                   dtype=np.float32)


def read_audio(path: Path | str) -> tuple[np.ndarray, int]:
    """Samples as float32 (frames, channels), and the sample rate."""
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return samples, rate


def _colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB through PALETTE."""
    positions = np.clip(values, 0.0, 1.0) * (len(PALETTE) - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, len(PALETTE) - 1)
    weight = (positions - low)[..., None]
    return (PALETTE[low] * (1 - weight) + PALETTE[high] * weight).astype(np.uint8)


def _waveform(mono: np.ndarray, width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), BACKGROUND)
    if mono.size == 0:
        return image
    # The min and max of the samples under each pixel column.
    edges = np.linspace(0, mono.size, width + 1).astype(int)
    starts = np.minimum(edges[:-1], mono.size - 1)
    lows = np.minimum.reduceat(mono, starts)
    highs = np.maximum.reduceat(mono, starts)
    peak = max(float(np.abs(mono).max()), 1e-6)
    middle = (height - 1) / 2
    draw = ImageDraw.Draw(image)
    for x, (low, high) in enumerate(zip(lows, highs)):
        top = middle - high / peak * middle
        bottom = middle - low / peak * middle
        draw.line([(x, top), (x, max(bottom, top + 1))], fill=WAVE_COLOR)
    return image


def _spectrogram(mono: np.ndarray, rate: int, width: int, height: int) -> Image.Image:
    """Log-magnitude spectrum of one window per pixel column, on a log-frequency axis."""
    padded = np.pad(mono, (N_FFT // 2, N_FFT // 2))
    centers = np.linspace(0, max(mono.size - 1, 0), width).astype(int)
    frames = padded[centers[:, None] + np.arange(N_FFT)[None, :]] * np.hanning(N_FFT).astype(np.float32)
    magnitude = np.abs(np.fft.rfft(frames, axis=1))  # (width, bins)
    decibels = 20 * np.log10(magnitude + 1e-6)
    top = decibels.max()
    normalized = np.clip((decibels - (top - 80.0)) / 80.0, 0.0, 1.0)  # an 80 dB range
    # Each pixel row reads the bin at its frequency, low notes at the bottom.
    bin_hz = rate / N_FFT
    row_hz = np.geomspace(MIN_HZ, rate / 2, height)[::-1]
    rows = np.clip(np.round(row_hz / bin_hz).astype(int), 0, normalized.shape[1] - 1)
    return Image.fromarray(_colorize(normalized[:, rows].T), mode="RGB")


def _time_axis(draw: ImageDraw.ImageDraw, seconds: float, width: int, top: int) -> None:
    font = ImageFont.load_default()
    steps = (1, 2, 5, 10, 15, 30, 60, 120)
    step = next((s for s in steps if seconds / s <= 10), 300)
    tick = 0.0
    while tick <= seconds:
        x = int(tick / seconds * (width - 1)) if seconds > 0 else 0
        draw.line([(x, top), (x, top + 3)], fill=AXIS_COLOR)
        label = f"{int(tick) // 60}:{int(tick) % 60:02d}"
        draw.text((min(x + 2, width - 30), top + 1), label, fill=AXIS_COLOR, font=font)
        tick += step


def song_picture(samples: np.ndarray, rate: int, width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """Waveform (top) and spectrogram (bottom) of `samples` (frames, channels) or (frames,)."""
    if rate <= 0:
        raise ValueError(f"sample rate must be positive (got {rate})")
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mono = np.nan_to_num(mono.astype(np.float32))
    body = height - AXIS_HEIGHT
    wave_height = int(body * WAVE_SHARE)
    picture = Image.new("RGB", (width, height), BACKGROUND)
    picture.paste(_waveform(mono, width, wave_height), (0, 0))
    if mono.size:
        picture.paste(_spectrogram(mono, rate, width, body - wave_height), (0, wave_height))
    _time_axis(ImageDraw.Draw(picture), mono.size / rate, width, body)
    return picture


def picture_of_file(path: Path | str, width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    samples, rate = read_audio(path)
    return song_picture(samples, rate, width, height)
