"""What an adapter costs the worker: its first load into the DiT, and what each job spends on
it once cached (the folder's header read again to notice a rewrite, then the adapter switched
on for the denoising loop and off after it).

The DiT is the random mid-size one (``MID_SIZE_DIT``, real proportions at a quarter of the
width) and the adapter a LoRA of every attention projection in the official format, written
to a temporary folder; both run through engine/adapters.py as a job's would.

    .venv/bin/python bench/bench_adapters.py [--rank 16] [--repeats 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from acestep_api.engine.adapters import AdapterManager
from acestep_api.engine.layout import LORA_FOLDER, TURBO_FOLDER
from acestep_api.engine.loading.dit import load_dit_checkpoint
from acestep_api.engine.tiny import MID_SIZE_DIT, write_tiny_adapter, write_tiny_checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = write_tiny_checkpoints(Path(folder), dit_overrides=MID_SIZE_DIT)
        write_tiny_adapter(root / LORA_FOLDER / "bench", 3, rank=args.rank, dit_overrides=MID_SIZE_DIT)
        dit = load_dit_checkpoint(root / TURBO_FOLDER, device=args.device)
        size = sum(p.numel() for p in dit.transformer.parameters()) / 1e6
        adapters = AdapterManager(root / LORA_FOLDER)
        with torch.inference_mode():
            start = time.perf_counter()
            adapters.prepare(dit.transformer, "bench")
            load = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.repeats):
                adapters.prepare(dit.transformer, "bench")
                with adapters.applied(dit.transformer, "bench", 1.0):
                    pass
            switch = (time.perf_counter() - start) / args.repeats
    print(f"DiT {size:.1f} M parameters on {args.device}, rank-{args.rank} LoRA: first load {load * 1000:.0f} ms, "
          f"switch per job {switch * 1000:.1f} ms")


if __name__ == "__main__":
    main()
