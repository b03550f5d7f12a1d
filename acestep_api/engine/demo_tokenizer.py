"""Offline Qwen-style tokenizers for the demo checkpoints: byte-level BPE learned from a built-in
text, followed by the Qwen chat tokens. The text encoder's and the 5 Hz LM's demo tokenizers
(:mod:`acestep_api.engine.tiny`, :mod:`acestep_api.engine.tiny_lm`) both start from here.
"""

from __future__ import annotations

from typing import Any

# Special tokens of the real Qwen3 tokenizers that the pipeline relies on.
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = [ENDOFTEXT, "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]

# Training text for the tiny BPE: the prompt templates' words plus some music vocabulary,
# so that real prompts tokenize to a sensible number of tokens.
BPE_TRAINING_TEXT = """\
# Instruction
Fill the audio semantic mask based on the given conditions:
Repaint the mask area based on the given conditions:
Generate audio semantic tokens based on the given conditions:
Extract the track from the audio: Generate the track based on the audio context:
Complete the input track with VOCALS | DRUMS | BASS | GUITAR | KEYBOARD | STRINGS | SYNTH:
# Caption
An upbeat pop song with bright synths, punchy drums and a catchy female vocal.
A slow acoustic ballad with warm guitar, soft piano and gentle strings.
Energetic rock with distorted electric guitars, driving bass and powerful male vocals.
Chill lo-fi hip hop beat with vinyl crackle, jazzy chords and a relaxed groove.
Epic orchestral soundtrack with brass, percussion, choir and cinematic tension.
# Metas
- bpm: 120
- timesignature: 4
- keyscale: C major
- duration: 30 seconds
- bpm: N/A
- keyscale: A minor, F# minor, Bb major, E minor, G major, D major
# Languages
en zh ja ko es fr de it pt ru unknown
# Lyric
[Verse]
Walking down the empty street tonight, city lights are shining bright
[Chorus]
We are singing, we are dancing, hold on to the music and the night
[Bridge]
Every heartbeat, every moment, every dream we left behind
[Instrumental] [Intro] [Outro] [Pre-Chorus] [Hook]
0123456789 . , ! ? : ; ' " ( ) - _ / \\ | [ ] { } < >
"""


def train_byte_level_bpe(text: str, vocab_size: int) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` (Qwen's scheme) learned from ``text``, offline,
    followed by the Qwen chat special tokens and ``<think>``/``</think>``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.splitlines(), trainer)
    # Added after the learned vocabulary, as in Qwen (whose <|endoftext|> follows the BPE ids).
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tokenizer
