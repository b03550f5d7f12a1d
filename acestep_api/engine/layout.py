"""The names inside a checkpoints folder: the official ACE-Step 1.5 layout, plus our demo marker.

Defined once and free of heavy imports, so the loaders, the LM finder, the demo writers, the
settings' defaults and the CLI all read the same names::

    acestep-v15-turbo/      a DiT: config.json, model.safetensors (or a sharded index),
    acestep-v15-base/              silence_latent.pt
    vae/                    AutoencoderOobleck, shared by every DiT
    Qwen3-Embedding-0.6B/   the text encoder, shared by every DiT
    acestep-5Hz-lm-0.6B/    a 5 Hz LM (a transformers causal-LM folder)
"""

from __future__ import annotations

from pathlib import Path

# DiT folders, one per model variant.
TURBO_FOLDER = "acestep-v15-turbo"
BASE_FOLDER = "acestep-v15-base"
SFT_FOLDER = "acestep-v15-sft"

# Shared by every DiT.
VAE_FOLDER = "vae"
TEXT_ENCODER_FOLDER = "Qwen3-Embedding-0.6B"

# The 5 Hz LMs, smallest first.
LM_0_6B_FOLDER = "acestep-5Hz-lm-0.6B"
LM_1_7B_FOLDER = "acestep-5Hz-lm-1.7B"
LM_4B_FOLDER = "acestep-5Hz-lm-4B"
LM_MODEL_NAMES = (LM_0_6B_FOLDER, LM_1_7B_FOLDER, LM_4B_FOLDER)

# What the server loads when nothing else is configured.
DEFAULT_DIT_FOLDER = TURBO_FOLDER
DEFAULT_LM_FOLDER = LM_0_6B_FOLDER

# Files of an official DiT folder (an LM folder uses the same weight file names).
CONFIG_FILE = "config.json"
OFFICIAL_WEIGHTS = "model.safetensors"
OFFICIAL_WEIGHTS_INDEX = "model.safetensors.index.json"
SILENCE_LATENT_FILE = "silence_latent.pt"

# A DiT saved in diffusers' layout instead: one subfolder per module, by our component names.
DIFFUSERS_SUBFOLDERS: dict[str, str] = {
    "transformer": "transformer",
    "condition_encoder": "condition_encoder",
    "audio_tokenizer": "audio_tokenizer",
    "audio_detokenizer": "audio_token_detokenizer",
}

# Not official: written at the root of the demo checkpoints so the server can say it serves noise.
DEMO_MARKER = "DEMO_CHECKPOINTS"


def is_demo_folder(checkpoint_dir: str | Path) -> bool:
    """Whether ``checkpoint_dir`` holds demo checkpoints (random weights)."""
    return (Path(checkpoint_dir) / DEMO_MARKER).is_file()

# Adapters (LoRA / LoKr, as the official trainer writes them with PEFT): one folder each,
# directly inside the adapters folder (ACESTEP_LORA_DIR, by default <checkpoints>/loras).
LORA_FOLDER = "loras"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
DEMO_ADAPTER = "demo-lora"  # the tiny LoRA the demo checkpoints include
