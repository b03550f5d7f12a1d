"""Where a GPU's time goes, stage by stage, on the real architectures at full size.

Writes random-weight checkpoints in the official layout at the official sizes (the 2B turbo
DiT, the VAE, Qwen3-Embedding-0.6B's shape as text encoder, the 1.7B 5 Hz LM; the tiny
tokenizers, so token ids differ, the shapes do not), loads them with the server's own loader
(bf16 on CUDA) and prints, for each song length and batch size:

- the LM's phase 1 (metadata, one row per song) and phase 2 (audio codes, with CFG): tokens
  per second, all rows together;
- text encoding, one diffusion step, VAE decode, VAE encode (of a source song of that
  length, as cover and repaint do), and encoding the mp3 files;

then songs per hour for 8 requests of batch 1 queued together on the server (its queue and
worker in this process), with batching of queued jobs off and on (ACESTEP_BATCH_MAX_ITEMS 1
and 8; songs without LM work, as batching asks), and for 8 songs with LM codes: 8 requests
one after another against one request of batch 8. Nothing is downloaded.

    python bench/bench_gpu.py                  # CUDA, full size: a few minutes on one H100/H200
    python bench/bench_gpu.py --tiny           # the demo checkpoints on CPU: a smoke run
    python bench/bench_gpu.py --tiny --durations 10 --batches 1,2

The LM's decoding step is compiled on CUDA by default (ACESTEP_LM_COMPILE=auto); --lm-compile
off measures it eagerly. Warm-up calls run first on the same shapes, so compiling is not
counted in the figures (its time is printed apart).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import importlib.metadata
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from acestep_api.engine import audio
from acestep_api.engine.engine import MusicEngine
from acestep_api.engine.layout import DEFAULT_LM_FOLDER, TEXT_ENCODER_FOLDER, TURBO_FOLDER, VAE_FOLDER
from acestep_api.engine.lm import prompts
from acestep_api.engine.lm.constraints import CodesConstraint, MetadataConstraint
from acestep_api.engine.lm.planner import PHASE1_MAX_TOKENS
from acestep_api.engine.lm.types import SamplingParams
from acestep_api.engine.loading.config import OFFICIAL_CONFIG_DEFAULTS
from acestep_api.engine.request import GenerationRequest
from acestep_api.engine.tiny import write_dit, write_text_encoder, write_tiny_checkpoints, write_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lm import random_lm_folder  # noqa: E402  (this folder's LM writer: the 1.7B shape)

CODES_PER_SECOND = 5
LM_1_7B_FOLDER = "acestep-5Hz-lm-1.7B"
CAPTION = "An upbeat pop song with bright synths, punchy drums and a catchy vocal hook."
LYRICS = "[Verse]\nWalking down the empty street tonight\nCity lights are shining bright\n" \
         "[Chorus]\nWe are singing, we are dancing\nAll night long\n" * 4
METADATA = {"bpm": 120, "key_scale": "C major", "time_signature": "4"}
COT = "<think>\nbpm: 120\ncaption: {caption}\nduration: {duration}\nkeyscale: C major\nlanguage: en\n" \
      "timesignature: 4\n</think>"
THROUGHPUT_SONGS = 8
# Random weights give near-flat next-token distributions: top-p then ranks most of the
# 64,000 codes at every step, work a trained model's peaked distribution never asks for.
# Scaling the output layer sharpens them to a nucleus of a few dozen tokens.
LOGIT_SHARPENING = 8.0

# The official sizes (docs/pipeline.md; /work/shared/docs/model-pipeline.md 3, 4.1, 7.1):
# the DiT's are the official config defaults, with the in_channels every shipped config says.
FULL_DIT = {key: value for key, value in OFFICIAL_CONFIG_DEFAULTS.items() if key not in ("layer_types", "model_version")}
FULL_DIT.update(in_channels=192, is_turbo=True, model_version="turbo")
FULL_VAE = {
    "sampling_rate": 48000, "audio_channels": 2, "encoder_hidden_size": 128, "channel_multiples": [1, 2, 4, 8, 16],
    "downsampling_ratios": [2, 4, 4, 6, 10], "decoder_channels": 128, "decoder_input_channels": 64,
}
FULL_TEXT_ENCODER = {
    "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
}
TEXT_ENCODER_VOCAB = 151669


# --------------------------------------------------------------------------- #
#  Checkpoints and engine                                                      #
# --------------------------------------------------------------------------- #


def write_full_size_checkpoints(root: Path, device: torch.device) -> str:
    """The official layout at full size, random weights; returns the LM's folder name."""
    started = time.perf_counter()
    write_text_encoder(root / TEXT_ENCODER_FOLDER, 0, FULL_TEXT_ENCODER, vocab_size=TEXT_ENCODER_VOCAB)
    write_vae(root / VAE_FOLDER, 0, FULL_VAE)
    write_dit(root / TURBO_FOLDER, FULL_DIT, 0, dtype=torch.bfloat16)
    lm = random_lm_folder("1.7B", root / "lm-source", device)
    lm.rename(root / LM_1_7B_FOLDER)
    print(f"wrote full-size random checkpoints in {time.perf_counter() - started:.0f} s")
    return LM_1_7B_FOLDER


def load_engine(args: argparse.Namespace, root: Path) -> MusicEngine:
    if args.tiny:
        write_tiny_checkpoints(root)
        lm_folder = DEFAULT_LM_FOLDER
    else:
        lm_folder = write_full_size_checkpoints(root, torch.device(args.device))
    started = time.perf_counter()
    engine = MusicEngine.from_checkpoints(
        root, [TURBO_FOLDER], root / "out", args.device, max(*args.batches, args.songs), lm_folder,
        init_llm="on", lm_kv_cache=args.lm_kv_cache, lm_compile=args.lm_compile,
    )
    if engine.planner is None:
        raise SystemExit(f"the LM did not load: {engine.lm_error}")
    with torch.no_grad():
        engine.planner.backend.model.get_output_embeddings().weight.mul_(LOGIT_SHARPENING)
    print(f"loaded in {time.perf_counter() - started:.0f} s")
    return engine


# --------------------------------------------------------------------------- #
#  Timing                                                                      #
# --------------------------------------------------------------------------- #


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(call) -> tuple[float, Any]:
    synchronize()
    started = time.perf_counter()
    result = call()
    synchronize()
    return time.perf_counter() - started, result


@dataclasses.dataclass
class Row:
    """One line of the stage table."""

    duration: int
    batch: int
    values: dict[str, float] = dataclasses.field(default_factory=dict)


def lm_phase1(engine: MusicEngine, batch: int) -> tuple[float, int]:
    """(seconds, tokens) of phase 1 for ``batch`` songs in one call (CFG on, as served)."""
    planner = engine.planner
    tok, vocab, backend = planner.tokenizer, planner.vocab, planner.backend
    constraint = MetadataConstraint(tok, vocab, batch, duration_range=planner.duration_range,
                                    max_caption_tokens=planner.limits.caption_tokens)
    seconds, rows = timed(lambda: backend.generate(
        [prompts.phase1_prompt(tok, CAPTION, LYRICS)] * batch,
        uncond_prompts=[prompts.phase1_uncond_prompt(tok, CAPTION, LYRICS)] * batch,
        params=planner_sampling(), max_new_tokens=PHASE1_MAX_TOKENS,
        stop_token_ids={tok.convert_tokens_to_ids("</think>"), vocab.eos_id},
        constraint=constraint, seeds=list(range(batch)),
    ))
    return seconds, sum(len(row) for row in rows)


def lm_phase2(engine: MusicEngine, duration: int, batch: int, *, warm: bool) -> tuple[float, int]:
    """(seconds, tokens) of phase 2 for ``batch`` songs of ``duration`` s in one call, with CFG.
    The warm-up has the same shapes (the same budget, so the same cache) but stops after a few
    codes."""
    planner = engine.planner
    tok, vocab, backend = planner.tokenizer, planner.vocab, planner.backend
    n_codes = duration * CODES_PER_SECOND
    cot = COT.format(caption=CAPTION, duration=duration)
    seconds, rows = timed(lambda: backend.generate(
        [prompts.phase2_prompt(tok, CAPTION, LYRICS, cot)] * batch,
        uncond_prompts=[prompts.phase2_uncond_prompt(tok, CAPTION, LYRICS)] * batch,
        params=planner_sampling(), max_new_tokens=n_codes + 1, stop_token_ids={vocab.eos_id},
        constraint=CodesConstraint(vocab, batch, 4 if warm else n_codes), seeds=list(range(batch)),
    ))
    return seconds, sum(len(row) for row in rows)


def planner_sampling() -> SamplingParams:
    """The request defaults: what a song gets when the client sets no LM field."""
    return SamplingParams(temperature=0.85, cfg_scale=2.5, top_p=0.9)


def song_request(duration: int, batch: int, *, thinking: bool) -> GenerationRequest:
    """A text2music request whose metadata is given (no phase 1); ``thinking``: LM codes."""
    return GenerationRequest(
        prompt=CAPTION, lyrics=LYRICS, audio_duration=float(duration), batch_size=batch, thinking=thinking,
        use_random_seed=False, seeds=list(range(batch)), audio_format="mp3", inference_steps=8, **METADATA,
    )


def vae_encode(engine: MusicEngine, duration: int, batch: int) -> float:
    """Seconds to encode ``batch`` source songs of ``duration`` s, one at a time as the engine does."""
    rate = engine.sample_rate
    waves = [0.1 * torch.randn(2, duration * rate, generator=torch.Generator().manual_seed(i)) for i in range(batch)]
    with torch.inference_mode():
        seconds, _ = timed(lambda: [audio.encode_audio(engine.vae, wave, torch.Generator(engine.device))
                                    for wave in waves])
    return seconds


def stage_row(engine: MusicEngine, duration: int, batch: int, phase1: dict[int, float]) -> Row:
    row = Row(duration, batch)
    lm_phase2(engine, duration, batch, warm=True)
    seconds, tokens = lm_phase2(engine, duration, batch, warm=False)
    row.values["lm_phase1_tok_s"] = phase1[batch]
    row.values["lm_phase2_tok_s"] = tokens / seconds
    row.values["lm_phase2_s"] = seconds
    result = engine.generate(song_request(duration, batch, thinking=False))
    timings = result.timings
    row.values["text_encoding_s"] = timings.text_encoding
    row.values["diffusion_step_s"] = timings.diffusion / max(result.steps or 1, 1)
    row.values["vae_decode_s"] = timings.decoding
    row.values["vae_encode_s"] = vae_encode(engine, duration, batch)
    row.values["file_encode_s"] = timings.encoding
    return row


def songs_per_hour(engine: MusicEngine, duration: int, songs: int) -> tuple[float, float]:
    """(serial, batched) songs per hour for ``songs`` songs of ``duration`` s with LM codes:
    that many requests of batch 1 one after another, against one request of that batch."""
    serial, _ = timed(lambda: [engine.generate(song_request(duration, 1, thinking=True)) for _ in range(songs)])
    batched, _ = timed(lambda: engine.generate(song_request(duration, songs, thinking=True)))
    return songs * 3600 / serial, songs * 3600 / batched


def served_songs_per_hour(engine: MusicEngine, root: Path, duration: int, songs: int, batch_max_items: int) -> float:
    """Songs per hour for ``songs`` requests of batch 1 queued together on the server (its own
    queue and worker, in this process), with ``ACESTEP_BATCH_MAX_ITEMS`` = ``batch_max_items``.
    The songs need no LM work (metadata given, no codes), as batching of queued jobs asks."""
    return asyncio.run(_served_songs_per_hour(engine, root, duration, songs, batch_max_items))


async def _served_songs_per_hour(engine: MusicEngine, root: Path, duration: int, songs: int,
                                 batch_max_items: int) -> float:
    import httpx

    from acestep_api.server.app import create_app
    from acestep_api.settings import Settings

    settings = Settings(_env_file=None, output_dir=root / f"served-{batch_max_items}", checkpoint_dir=root,
                        batch_max_items=batch_max_items, batch_max=max(songs, 1))
    served = copy.copy(engine)  # the same models, writing to this server's audio folder
    served.output_dir = settings.audio_dir
    app = create_app(settings, served, start_worker=False)  # every request waits, then the worker starts
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            ids = []
            for seed in range(songs):
                body = {"prompt": CAPTION, "lyrics": LYRICS, "audio_duration": duration, "batch_size": 1,
                        "thinking": False, "inference_steps": 8, "audio_format": "mp3", "use_random_seed": False,
                        "seed": seed, **METADATA}
                answer = await client.post("/release_task", json=body)
                answer.raise_for_status()
                ids.append(answer.json()["data"]["task_id"])
            started = time.perf_counter()
            app.state.worker.start()
            while True:
                jobs = [app.state.queue.get(task_id) for task_id in ids]
                if all(job.status.value in ("succeeded", "failed") for job in jobs):
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
    failed = [job.error for job in jobs if job.status.value != "succeeded"]
    if failed:
        raise SystemExit(f"a served song failed: {failed[0]}")
    return songs * 3600 / elapsed


# --------------------------------------------------------------------------- #
#  Report                                                                      #
# --------------------------------------------------------------------------- #

COLUMNS = [
    ("lm_phase1_tok_s", "LM ph1 tok/s", "{:12.1f}"),
    ("lm_phase2_tok_s", "LM ph2 tok/s", "{:12.1f}"),
    ("lm_phase2_s", "LM ph2 s", "{:9.2f}"),
    ("text_encoding_s", "text enc s", "{:10.3f}"),
    ("diffusion_step_s", "DiT step s", "{:10.3f}"),
    ("vae_decode_s", "VAE dec s", "{:9.3f}"),
    ("vae_encode_s", "VAE enc s", "{:9.3f}"),
    ("file_encode_s", "mp3 s", "{:7.3f}"),
]


def header(args: argparse.Namespace, engine: MusicEngine) -> None:
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "CPU")
    backend = engine.planner.backend
    compiled = "compiled" if getattr(backend, "compile_config", None) else "eager"
    print(f"device: {name} ({device}); torch {torch.__version__}, diffusers {importlib.metadata.version('diffusers')}, "
          f"transformers {importlib.metadata.version('transformers')}")
    print(f"checkpoints: {'tiny demo (random)' if args.tiny else 'full size (random weights)'}; DiT {engine.dtype}; "
          f"LM {engine.planner.model_name}, {getattr(backend, 'kv_cache', '?')} KV cache, decoding step {compiled}")


def table_header() -> None:
    print("\n" + f"{'song':>6} {'batch':>5} " + " ".join(f"{title:>{len(fmt.format(0))}}" for _, title, fmt in COLUMNS),
          flush=True)


def table_row(row: Row) -> None:
    cells = " ".join(fmt.format(row.values[key]) for key, _, fmt in COLUMNS)
    print(f"{row.duration:>5}s {row.batch:>5} {cells}", flush=True)


def table_note() -> None:
    print("LM tok/s: all rows of the call together (phase 1: metadata, one row per song; phase 2: codes, 5 per "
          f"second of song), CFG 2.5, top-p 0.9, logits sharpened x{LOGIT_SHARPENING:g} as a trained model's are.\n"
          "DiT step: one of the turbo's 8. VAE enc: a source song of that length per item.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", "--config-tiny", action="store_true", help="the demo checkpoints (CPU by default)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--durations", default="30,240", help="song lengths in seconds, comma-separated")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    parser.add_argument("--throughput-duration", type=int, default=30, help="song length for songs per hour")
    parser.add_argument("--songs", type=int, default=THROUGHPUT_SONGS, help="concurrent requests for songs per hour")
    parser.add_argument("--lm-compile", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--lm-kv-cache", choices=("static", "dynamic"), default="static")
    args = parser.parse_args()
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.durations = [int(value) for value in args.durations.split(",")]
    args.batches = [int(value) for value in args.batches.split(",")]
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --tiny (CPU) or on a GPU machine")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        engine = load_engine(args, Path(tmp))
        header(args, engine)

        warm_up, _ = timed(lambda: (lm_phase1(engine, 1),
                                    engine.generate(song_request(min(args.durations), 1, thinking=True))))
        print(f"warm-up (first calls, LM compiling when on): {warm_up:.1f} s", flush=True)
        phase1 = {}
        for batch in args.batches:
            lm_phase1(engine, batch)  # the same shapes first
            seconds, tokens = lm_phase1(engine, batch)
            phase1[batch] = tokens / seconds
        table_header()
        for duration in args.durations:
            for batch in args.batches:
                table_row(stage_row(engine, duration, batch, phase1))
        table_note()

        unbatched = served_songs_per_hour(engine, Path(tmp), args.throughput_duration, args.songs, 1)
        batching = served_songs_per_hour(engine, Path(tmp), args.throughput_duration, args.songs, args.songs)
        print(f"\nsongs per hour, {args.songs} requests of {args.throughput_duration} s songs queued together on the "
              f"server (DiT 8 steps, VAE, mp3; no LM work, as batching of queued jobs asks):")
        print(f"  ACESTEP_BATCH_MAX_ITEMS=1 (no batching): {unbatched:8.1f}")
        print(f"  ACESTEP_BATCH_MAX_ITEMS={args.songs}:{'':>15} {batching:8.1f}  ({batching / unbatched:.2f}x)")
        serial, batched = songs_per_hour(engine, args.throughput_duration, args.songs)
        print(f"\nsongs per hour, {args.songs} requests of {args.throughput_duration} s songs (LM codes with CFG, "
              f"DiT 8 steps, VAE, mp3; metadata given):")
        print(f"  one after another, batch 1 each: {serial:8.1f}")
        print(f"  one request of batch {args.songs}:{'':>10} {batched:8.1f}  "
              f"({batched / serial:.2f}x; what batching queued requests can reach)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
