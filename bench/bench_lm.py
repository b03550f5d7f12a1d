"""How fast the 5 Hz LM writes audio codes (phase 2, with CFG), in tokens per second.

Runs on random weights, never downloads anything: ``tiny`` is the demo LM, ``1.7B`` is the
architecture of acestep-5Hz-lm-1.7B (model-pipeline.md 8.1) with random weights and the tiny
LM's tokenizer (its code tokens sit at other ids; the logits are the real width). Codes are
constrained to exactly 5 x duration per row when the codes constraint is available.
The transformers backend always runs, once per KV cache (``--kv-caches``: static, dynamic)
and, with ``--compile``, static with the compiled decoding step too; vllm too when it is
installed and the device is CUDA.

    .venv/bin/python bench/bench_lm.py --config tiny --device cpu --duration 10 --batch 2
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch

from acestep_api.engine.lm import prompts
from acestep_api.engine.lm.backend_transformers import TransformersBackend
from acestep_api.engine.lm.loader import load_lm, load_lm_tokenizer
from acestep_api.engine.lm.types import SamplingParams
from acestep_api.engine.lm.vocab import LMVocab
from acestep_api.engine.tiny_lm import write_tiny_lm

CODES_PER_SECOND = 5
LM_1_7B_DIMS = {
    "vocab_size": 217204,
    "hidden_size": 2048,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 6144,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
# A mid-size shape for CPU runs: the 1.7B's logits width and head layout, a quarter of its depth
# and half its width.
LM_SMALL_DIMS = {**LM_1_7B_DIMS, "hidden_size": 1024, "num_hidden_layers": 8, "intermediate_size": 3072,
                 "head_dim": 64}
COT = (
    "<think>\nbpm: 120\ncaption: An upbeat pop song with bright synths and punchy drums.\n"
    "duration: {duration}\nkeyscale: C major\nlanguage: en\ntimesignature: 4\n</think>"
)
CAPTION = "An upbeat pop song with bright synths and punchy drums."
LYRICS = "[Verse]\nWalking down the empty street tonight\n[Chorus]\nWe are singing, we are dancing\n"


def random_lm_folder(config: str, root: Path, device: torch.device) -> Path:
    """A folder with the chosen random LM: the tiny one as written, or the 1.7B shape saved beside it."""
    tiny = write_tiny_lm(root / "acestep-5Hz-lm-0.6B")
    if config == "tiny":
        return tiny
    dims = LM_1_7B_DIMS if config == "1.7B" else LM_SMALL_DIMS
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = load_lm_tokenizer(tiny)
    lm_config = Qwen3Config(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **dims)
    lm_config.architectures = ["Qwen3ForCausalLM"]
    with torch.device(device):
        model = Qwen3ForCausalLM(lm_config)  # default init: random, the right cost
    folder = root / f"random-lm-{config}"
    model.to(torch.bfloat16).save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    del model
    return folder


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def has_codes_constraint() -> bool:
    return importlib.util.find_spec("acestep_api.engine.lm.constraints") is not None


def codes_constraint(backend, rows: int, n_codes: int):
    if not has_codes_constraint():
        return None
    from acestep_api.engine.lm.constraints import CodesConstraint

    vocab = LMVocab.from_tokenizer(backend.tokenizer, backend.vocab_size)
    return CodesConstraint(vocab, rows, n_codes)


def run_phase2(backend, args: argparse.Namespace, n_codes: int) -> tuple[float, int]:
    """(seconds, conditional tokens generated) for one batch of phase 2."""
    tokenizer = backend.tokenizer
    prompt = prompts.phase2_prompt(tokenizer, CAPTION, LYRICS, COT.format(duration=args.duration))
    uncond = prompts.phase2_uncond_prompt(tokenizer, CAPTION, LYRICS)
    constraint = codes_constraint(backend, args.batch, n_codes)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    _synchronize()
    start = time.perf_counter()
    outputs = backend.generate(
        [prompt] * args.batch,
        uncond_prompts=[uncond] * args.batch,
        params=SamplingParams(cfg_scale=args.cfg_scale),
        max_new_tokens=n_codes + 1,
        stop_token_ids={eos} if constraint is not None else set(),
        constraint=constraint,
        seeds=list(range(args.batch)),
    )
    _synchronize()
    return time.perf_counter() - start, sum(len(tokens) for tokens in outputs)


def report(name: str, backend, args: argparse.Namespace) -> None:
    n_codes = CODES_PER_SECOND * args.duration
    run_phase2(backend, argparse.Namespace(**{**vars(args), "duration": 2}), 2 * CODES_PER_SECOND)  # warm-up
    for repeat in range(args.repeats):
        seconds, tokens = run_phase2(backend, args, n_codes)
        print(
            f"{name:>15} | batch {args.batch} | {tokens:6d} tokens in {seconds:7.2f} s | "
            f"{tokens / seconds:8.1f} tok/s total | {tokens / seconds / args.batch:7.1f} tok/s per row | "
            f"{args.duration * args.batch / seconds:6.2f} s of audio per s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("tiny", "small", "1.7B"), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--duration", type=int, default=30, help="seconds of audio; codes = 5 x duration")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cfg-scale", type=float, default=2.5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sharpen", type=float, default=8.0,
                        help="scale the random output layer: a nucleus of a few dozen tokens, as a trained "
                             "model's, instead of most of the vocabulary (1: as initialised)")
    parser.add_argument("--kv-caches", default="static,dynamic", help="the transformers backend's KV caches to run")
    parser.add_argument("--compile", action="store_true", help="also the static cache with the compiled step")
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        folder = random_lm_folder(args.config, Path(tmp), device)
        print(f"config {args.config}, device {device}, {CODES_PER_SECOND * args.duration} codes per row, "
              f"cfg {args.cfg_scale}, codes constraint: {has_codes_constraint()}, logits x{args.sharpen:g}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        backend = load_lm(folder, device, "transformers", compile="off")
        assert isinstance(backend, TransformersBackend)
        with torch.no_grad():  # random weights' flat distributions, sharpened as trained ones are
            backend.model.get_output_embeddings().weight.mul_(args.sharpen)
        variants = [(kv_cache, False) for kv_cache in args.kv_caches.split(",")]
        if args.compile:
            variants.append(("static", True))
        for kv_cache, compiled in variants:
            variant = TransformersBackend(backend.model, backend.tokenizer, backend.model_name, device,
                                          kv_cache=kv_cache, compile_step=compiled)
            report(f"{kv_cache}{'+compiled' if compiled else ''}", variant, args)
        del backend, variant
        if importlib.util.find_spec("vllm") is not None and device.type == "cuda":
            report("vllm", load_lm(folder, device, "vllm"), args)
        else:
            print("vllm: skipped (needs the vllm extra and a CUDA device)")


if __name__ == "__main__":
    main()
