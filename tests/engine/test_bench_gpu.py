"""bench/bench_gpu.py's --tiny path runs to its end on CPU and prints every figure, so that the
GPU benchmark cannot rot while no GPU runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_tiny_run_prints_every_stage_and_the_throughput(tmp_path):
    command = [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--tiny", "--durations", "10", "--batches", "1,2",
               "--throughput-duration", "10", "--songs", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"device: .*; torch \S+, diffusers \S+, transformers \S+", out)
    assert "static KV cache, decoding step eager" in out  # compiling is off on CPU by default
    for title in ("LM ph1 tok/s", "LM ph2 tok/s", "text enc s", "DiT step s", "VAE dec s", "VAE enc s", "mp3 s"):
        assert title in out
    rows = re.findall(r"^\s+10s\s+(\d)\s+(.+)$", out, flags=re.M)
    assert [batch for batch, _ in rows] == ["1", "2"]
    for _, cells in rows:
        values = [float(cell) for cell in cells.split()]
        assert len(values) == 8 and all(value > 0 for value in values)
    unbatched = float(re.search(r"ACESTEP_BATCH_MAX_ITEMS=1 \(no batching\):\s+([\d.]+)", out).group(1))
    batching = float(re.search(r"ACESTEP_BATCH_MAX_ITEMS=2:\s+([\d.]+)", out).group(1))
    assert unbatched > 0 and batching > 0
    serial = float(re.search(r"one after another, batch 1 each:\s+([\d.]+)", out).group(1))
    batched = float(re.search(r"one request of batch 2:\s+([\d.]+)", out).group(1))
    assert serial > 0 and batched > 0
    assert not list(tmp_path.glob("bench-gpu-*"))  # its checkpoints went with it
