"""What the DiT is conditioned on: prompt texts, their encodings, and the packed conditions.

Follows docs/pipeline.md#text-encoding, #conditioning and #audio-tasks. The prompt
templates, task instructions and metas lines are diffusers' ``AceStepPipeline`` helpers,
which match the official handler. Tokenization is ours: the official handler pads on the
right with the pad id whatever the tokenizer's padding side, which diffusers' batched
``encode_prompt`` does not guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.pipelines.ace_step.pipeline_ace_step import SFT_GEN_PROMPT, AceStepPipeline

from acestep_api.engine.request import DEFAULT_INSTRUCTION, GenerationRequest

CAPTION_MAX_TOKENS = 256
LYRICS_MAX_TOKENS = 2048
TIMBRE_FRAMES = 750  # 30 s of latents: the timbre input when there is no reference audio
INSTRUMENTAL_LYRICS_TEXT = "[Instrumental]"


# --- Prompt texts -------------------------------------------------------------------------


def task_instruction(request: GenerationRequest) -> str:
    """The request's own instruction, or the task's template when it was left at the default."""
    instruction = request.instruction.strip()
    if not instruction or instruction == DEFAULT_INSTRUCTION:
        # cover-nofsq is told the cover instruction (it differs in its source, not its text).
        task_type = "cover" if request.task_type == "cover-nofsq" else request.task_type
        instruction = AceStepPipeline._get_task_instruction(
            task_type=task_type,
            track_name=request.track_name or None,
            complete_track_classes=request.track_classes,
        )
    return instruction if instruction.endswith(":") else instruction + ":"


def metas_text(request: GenerationRequest, duration: float) -> str:
    """The four metas lines; values the user did not give read N/A."""
    return AceStepPipeline._build_metadata_string(
        bpm=request.bpm,
        keyscale=request.key_scale,
        timesignature=request.time_signature,
        audio_duration=duration,
    )


def lego_sft_caption(request: GenerationRequest, instruction: str) -> str:
    """The caption block a lego-SFT checkpoint was trained on: the song (``global_caption``)
    and the track (``prompt``), and whether the chunk mask is explicit. A segment
    instruction ("Generate a segment of ...") has no global line."""
    mask_control = "Mask Control: false" if request.chunk_mask_mode == "auto" else "Mask Control: true"
    if "a segment" in instruction.lower():
        return f"Local: {request.prompt}\n{mask_control}"
    return f"Global: {request.global_caption}\nLocal: {request.prompt}\n{mask_control}"


def caption_prompt(request: GenerationRequest, duration: float, lego_sft: bool = False) -> str:
    """The caption prompt; ``lego_sft`` (the checkpoint's config says ``is_lego_sft``) wraps the
    caption in the Global/Local block, the only place ``global_caption`` is read."""
    instruction = task_instruction(request)
    caption = lego_sft_caption(request, instruction) if lego_sft else request.prompt
    return SFT_GEN_PROMPT.format(instruction, caption, metas_text(request, duration))


def lyrics_prompt(request: GenerationRequest) -> str:
    lyrics = INSTRUMENTAL_LYRICS_TEXT if request.is_instrumental else request.lyrics
    return f"# Languages\n{request.vocal_language}\n\n# Lyric\n{lyrics}<|endoftext|>"


# --- Text encoding ------------------------------------------------------------------------


def tokenize_right_padded(tokenizer, texts: list[str], max_length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, L] padded on the right with the pad id, and the bool mask of real tokens."""
    rows = [tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]
    width = max(len(row) for row in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids.to(device), mask.to(device)


@dataclass
class TextEncoding:
    caption_states: torch.Tensor  # [B, Lt, 1024] last hidden state of the text encoder
    caption_mask: torch.Tensor  # [B, Lt] bool
    lyrics_states: torch.Tensor  # [B, Ll, 1024] token embeddings only
    lyrics_mask: torch.Tensor  # [B, Ll] bool

    def repeat(self, batch_size: int) -> "TextEncoding":
        """The same texts for every item of a batch."""
        return TextEncoding(*(t.expand(batch_size, *t.shape[1:]) for t in vars(self).values()))


@torch.no_grad()
def encode_texts(tokenizer, text_encoder, captions: list[str], lyrics: list[str]) -> TextEncoding:
    """Captions through the whole text encoder (no attention mask: it is causal, so right
    padding cannot change the real tokens); lyrics through its embedding table only."""
    device = text_encoder.device
    caption_ids, caption_mask = tokenize_right_padded(tokenizer, captions, CAPTION_MAX_TOKENS, device)
    lyrics_ids, lyrics_mask = tokenize_right_padded(tokenizer, lyrics, LYRICS_MAX_TOKENS, device)
    caption_states = text_encoder(input_ids=caption_ids).last_hidden_state
    lyrics_states = text_encoder.get_input_embeddings()(lyrics_ids)
    return TextEncoding(caption_states, caption_mask, lyrics_states, lyrics_mask)


# --- DiT conditions -----------------------------------------------------------------------


def silence_frames(silence_latent: torch.Tensor, length: int) -> torch.Tensor:
    """The first ``length`` frames of the silence latent [1, L, C], restarting from frame 0 if longer."""
    available = silence_latent.shape[1]
    if available < length:
        silence_latent = silence_latent.repeat(1, -(-length // available), 1)
    return silence_latent[:, :length]


@dataclass
class Conditions:
    encoder_hidden_states: torch.Tensor  # [B, S, D] packed lyrics + timbre + caption
    encoder_attention_mask: torch.Tensor  # [B, S]
    context_latents: torch.Tensor  # [B, T, 2C] source latents + chunk mask


def _placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(module.parameters())
    return parameter.device, parameter.dtype


def silence_timbre(silence_latent: torch.Tensor, batch_size: int, frames: int = TIMBRE_FRAMES) -> torch.Tensor:
    """The timbre input of items without reference audio: the first 30 s of silence, per item."""
    return silence_frames(silence_latent, frames).expand(batch_size, -1, -1)


@torch.no_grad()
def encode_conditions(
    condition_encoder: torch.nn.Module, texts: TextEncoding, timbre: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed cross-attention sequence [B, S, D] and its mask, one timbre input per item."""
    device, dtype = _placement(condition_encoder)
    batch_size = texts.caption_states.shape[0]
    return condition_encoder(
        text_hidden_states=texts.caption_states.to(dtype),
        text_attention_mask=texts.caption_mask,
        lyric_hidden_states=texts.lyrics_states.to(dtype),
        lyric_attention_mask=texts.lyrics_mask,
        refer_audio_acoustic_hidden_states_packed=timbre.to(device=device, dtype=dtype),
        refer_audio_order_mask=torch.arange(batch_size, device=device, dtype=torch.long),
    )


def context_latents(source: torch.Tensor, chunk_mask: torch.Tensor) -> torch.Tensor:
    """Source latents [B, T, C] next to the chunk mask [B, T] (True = generate), repeated over channels."""
    mask = chunk_mask.to(dtype=source.dtype).unsqueeze(-1).expand_as(source)
    return torch.cat([source, mask], dim=-1)


@torch.no_grad()
def cover_hints(
    audio_tokenizer: torch.nn.Module,
    audio_detokenizer: torch.nn.Module,
    source: torch.Tensor,
    silence_latent: torch.Tensor,
) -> torch.Tensor:
    """Source latents through the 5 Hz FSQ bottleneck and back: what a cover keeps of its source.

    The tokenizer pads to a multiple of 5 frames with the first silence frames; the
    result is cropped back to the source length (docs/pipeline.md#conditioning).
    """
    device, dtype = _placement(audio_tokenizer)
    quantized, _ = audio_tokenizer.tokenize(source.to(device=device, dtype=dtype), silence_latent.to(device, dtype))
    return audio_detokenizer(quantized)[:, : source.shape[1]].to(source.dtype)


@torch.no_grad()
def codes_to_latents(
    audio_tokenizer: torch.nn.Module, audio_detokenizer: torch.nn.Module, codes: list[int]
) -> torch.Tensor:
    """5 Hz FSQ codes -> 25 Hz latents [1, 5N, C] ("LM hints"), as the official handler decodes them."""
    device, dtype = _placement(audio_tokenizer)
    indices = torch.tensor(codes, device=device, dtype=torch.long).view(1, -1, 1)
    quantized = audio_tokenizer.quantizer.get_output_from_indices(indices).to(dtype)
    return audio_detokenizer(quantized)


@torch.no_grad()
def latents_to_codes(audio_tokenizer: torch.nn.Module, latents: torch.Tensor, silence_latent: torch.Tensor) -> list[int]:
    """25 Hz latents [1, T, C] -> their 5 Hz FSQ codes, as the official ``convert_src_audio_to_codes``."""
    device, dtype = _placement(audio_tokenizer)
    _, indices = audio_tokenizer.tokenize(latents.to(device=device, dtype=dtype), silence_latent.to(device, dtype))
    return [int(code) for code in indices.flatten().tolist()]


@torch.no_grad()
def build_conditions(
    condition_encoder: torch.nn.Module,
    texts: TextEncoding,
    timbre: torch.Tensor,
    source: torch.Tensor,
    chunk_mask: torch.Tensor,
) -> Conditions:
    """Encoder states for ``texts`` and ``timbre``, context latents for ``source`` and ``chunk_mask``."""
    states, mask = encode_conditions(condition_encoder, texts, timbre)
    return Conditions(states, mask, context_latents(source, chunk_mask))


@torch.no_grad()
def build_text2music_conditions(
    condition_encoder: torch.nn.Module,
    texts: TextEncoding,
    silence_latent: torch.Tensor,
    latent_length: int,
    timbre_frames: int = TIMBRE_FRAMES,
) -> Conditions:
    """Conditions for text2music with no reference audio, no source audio and no codes:
    the timbre input and the source latents are silence, the chunk mask all ones."""
    device, dtype = _placement(condition_encoder)
    batch_size = texts.caption_states.shape[0]
    silence = silence_latent.to(device=device, dtype=dtype)
    source = silence_frames(silence, latent_length).expand(batch_size, -1, -1)
    chunk_mask = torch.ones(source.shape[:2], dtype=torch.bool, device=device)
    return build_conditions(
        condition_encoder, texts, silence_timbre(silence, batch_size, timbre_frames), source, chunk_mask
    )
