"""Find and load ACE-Step 1.5 checkpoints into diffusers' ACE-Step modules.

Two DiT folder layouts are accepted:

* the **official** one (``config.json``, ``model.safetensors`` or a sharded
  ``model.safetensors.index.json``, ``silence_latent.pt``): one flat state dict whose keys
  are renamed to diffusers' names (docs/pipeline.md#dit-folders) and loaded strictly;
* the **diffusers** one (subfolders ``transformer/``, ``condition_encoder/``,
  ``audio_tokenizer/``, ``audio_token_detokenizer/``), loaded with ``from_pretrained``.

The text encoder (Qwen3-Embedding) and the VAE (``AutoencoderOobleck``) are plain
transformers / diffusers folders, loaded from local files only.

Modules: ``errors`` (what goes wrong), ``folders`` (finding a checkpoint folder),
``config`` (the official config.json), ``modules`` (building the diffusers modules),
``keys`` (official weight names <-> diffusers names), ``dit`` (loading a DiT),
``text_encoder`` and ``vae`` (the shared models).
"""
