"""Constrained decoding driven by random logits through a real byte-level BPE tokenizer.

Whatever the "model" prefers, every row must finish, parse with ``parse_cot`` and hold only
allowed values; forced values must come back unchanged; rows must not influence each other.
"""

from __future__ import annotations

import importlib
import re

import pytest
import torch

from acestep_api.engine.lm.constraints import CodesConstraint, MetadataConstraint, vocab_tables
from acestep_api.engine.lm.cot import KEYSCALES, LANGUAGES, format_cot, parse_cot
from acestep_api.engine.lm.vocab import LMVocab
from tests.property_seeds import property_seeds

CJK_CAPTION = "一首温柔的中文流行歌曲，钢琴与弦乐，女声演唱"
LONG_CAPTION = (
    "Verse: an emotional ballad that opens with solo piano and a breathy female vocal, then "
    "builds through warm strings and soft drums into a soaring final chorus"
)
LAYOUT = re.compile(
    r"<think>\nbpm: \d+\ncaption: \S.*\nduration: \d+\nkeyscale: .+\nlanguage: .+\ntimesignature: \d\n</think>",
    re.DOTALL,
)


def _tokenizer_builders():
    from acestep_api.engine.tiny import build_tiny_tokenizer

    builders = {"tiny": build_tiny_tokenizer}
    try:  # the tiny LM tokenizer (64,000 code tokens), where it exists
        tiny_lm = importlib.import_module("acestep_api.engine.tiny_lm")
    except ImportError:
        tiny_lm = None
    build_lm = getattr(tiny_lm, "build_tiny_lm_tokenizer", None)
    if build_lm is not None:
        builders["tiny_lm"] = build_lm
    return builders


@pytest.fixture(scope="module", params=sorted(_tokenizer_builders()))
def tokenizer(request):
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

    built = _tokenizer_builders()[request.param]()
    if isinstance(built, PreTrainedTokenizerBase):
        return built
    return PreTrainedTokenizerFast(tokenizer_object=built, eos_token="<|im_end|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def vocab(tokenizer):
    # Logit rows past the tokenizer, as real checkpoints pad their vocabulary.
    return LMVocab.from_tokenizer(tokenizer, len(tokenizer) + 13)


def random_logits(vocab, generator, *, random_codes):
    """Logits of a random "model". Unless ``random_codes``, it loves audio codes and the padded
    rows past the tokenizer (a constant +10 there, cheap for a 64k-code vocabulary), so any leak
    of them through a constraint shows at once."""
    if random_codes:
        return torch.randn(vocab.vocab_size, generator=generator) * 3
    logits = torch.full((vocab.vocab_size,), 10.0)
    logits[: vocab.first_code_id] = torch.randn(vocab.first_code_id, generator=generator) * 3
    return logits


def drive(constraint, vocab, seeds, *, bias=None, random_codes=False, max_steps=2000):
    """Drive every row with random logits (one generator per row) until all rows finish.
    Returns each row's tokens up to and including its EOS."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    rows: list[list[int]] = [[] for _ in seeds]
    for _ in range(max_steps):
        if all(constraint.finished):
            return rows
        logits = torch.stack([random_logits(vocab, g, random_codes=random_codes) for g in generators])
        if bias is not None:
            logits = logits + bias
        tokens = constraint.apply(logits).argmax(-1)  # the random logits make the choice random
        for b, done in enumerate(constraint.finished):
            if not done:
                rows[b].append(int(tokens[b]))
        constraint.advance(tokens)
    raise AssertionError("rows did not finish")


def decode(tokenizer, tokens):
    return tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def caption_bias(tokenizer, vocab):
    """Logit offsets that make line breaks and indented continuations likely."""
    tables = vocab_tables(tokenizer, vocab)
    return (tables.caption_line_end.float() * 8 + tables.caption_space_start.float() * 4)


def assert_valid_metas(metas, *, caption=True, language=True, durations=(10, 600)):
    expected_keys = {"bpm", "duration", "keyscale", "timesignature"} | ({"caption"} if caption else set())
    expected_keys |= {"language"} if language else set()
    assert set(metas) == expected_keys
    assert isinstance(metas["bpm"], int) and 30 <= metas["bpm"] <= 300
    assert isinstance(metas["duration"], int) and durations[0] <= metas["duration"] <= durations[1]
    assert metas["keyscale"] in KEYSCALES
    assert metas["timesignature"] in {"2", "3", "4", "6"}
    if language:
        assert metas["language"] in LANGUAGES
    if caption:
        assert isinstance(metas["caption"], str) and metas["caption"].strip()


def caption_as_written(think_text):
    """The caption lines between "caption:" and "duration:", joined as the format defines."""
    block = think_text.split("\ncaption:", 1)[1].split("\nduration:", 1)[0]
    return " ".join(line.strip() for line in block.split("\n") if line.strip())


@pytest.mark.parametrize("biased", [False, True])
@property_seeds(50)
def test_random_rows_finish_and_parse_to_allowed_values(tokenizer, vocab, biased, seeds):
    bias = caption_bias(tokenizer, vocab) if biased else None
    wrapped = 0
    for seed in seeds:
        constraint = MetadataConstraint(tokenizer, vocab, 2, max_caption_tokens=24)
        rows = drive(constraint, vocab, [seed, 1000 + seed], bias=bias)
        for tokens in rows:
            assert tokens[-1] == vocab.eos_id and tokens.count(vocab.eos_id) == 1
            text = decode(tokenizer, tokens[:-1])
            assert LAYOUT.fullmatch(text), text
            parsed = parse_cot(text)
            assert_valid_metas(parsed.metas)
            written = caption_as_written(text)
            if written[:1] not in ("'", '"'):  # a quoted start may be read as YAML quoting
                assert parsed.metas["caption"] == written
            wrapped += "\n " in text.split("\nduration:")[0]
    if biased:
        # Indented continuation lines were exercised: more than 10 rows in 50 seeds' 100.
        assert wrapped > len(seeds) // 5


@property_seeds(20)
def test_narrow_duration_range_is_respected(tokenizer, vocab, seeds):
    durations = set()
    for seed in seeds:
        constraint = MetadataConstraint(tokenizer, vocab, 1, duration_range=(10, 14), max_caption_tokens=4)
        [tokens] = drive(constraint, vocab, [seed])
        metas = parse_cot(decode(tokenizer, tokens)).metas
        assert_valid_metas(metas, durations=(10, 14))
        durations.add(metas["duration"])
    assert len(durations) > 1


FORCED = [
    {"bpm": 300, "caption": CJK_CAPTION, "duration": 77, "keyscale": "B♭ major", "language": "ja",
     "timesignature": "4/4"},
    {"caption": LONG_CAPTION, "language": "no", "duration": 600},
    {"keyscale": "F# minor", "timesignature": "6", "bpm": "95"},
    {},
]


@property_seeds(20)
def test_forced_fields_come_back_unchanged(tokenizer, vocab, seeds):
    for seed in seeds:
        constraint = MetadataConstraint(tokenizer, vocab, len(FORCED), forced=FORCED, max_caption_tokens=16)
        rows = drive(constraint, vocab, [seed * 10 + b for b in range(len(FORCED))])
        texts = [decode(tokenizer, tokens[:-1]) for tokens in rows]
        # A fully forced row writes exactly format_cot's text.
        assert texts[0] == format_cot(FORCED[0])
        metas = [parse_cot(text).metas for text in texts]
        for row_metas in metas:
            assert_valid_metas(row_metas)
        assert metas[0] == {
            "bpm": 300, "caption": CJK_CAPTION, "duration": 77, "keyscale": "B♭ major", "language": "ja",
            "timesignature": "4",
        }
        assert {k: metas[1][k] for k in ("caption", "language", "duration")} == FORCED[1]
        assert "\n  " in texts[1]  # the long caption wrapped as yaml wraps it
        assert {k: metas[2][k] for k in ("keyscale", "timesignature", "bpm")} == {
            "keyscale": "F# minor", "timesignature": "6", "bpm": 95,
        }


def test_forced_values_outside_the_generated_sets_are_written_as_given(tokenizer, vocab):
    forced = [{"duration": 5, "keyscale": "C dorian"}]
    constraint = MetadataConstraint(tokenizer, vocab, 1, forced=forced, max_caption_tokens=4)
    [tokens] = drive(constraint, vocab, [3])
    text = decode(tokenizer, tokens)
    assert "\nduration: 5\nkeyscale: C dorian\n" in text


@pytest.mark.parametrize("write_caption, write_language", [(False, True), (True, False), (False, False)])
@property_seeds(15)
def test_skipped_caption_and_language_are_not_written_even_when_forced(tokenizer, vocab, write_caption, write_language, seeds):
    forced = [{"caption": "a forced caption", "language": "de"}, {}]
    for seed in seeds:
        constraint = MetadataConstraint(
            tokenizer, vocab, 2, forced=forced, write_caption=write_caption, write_language=write_language,
            max_caption_tokens=8,
        )
        for b, tokens in enumerate(drive(constraint, vocab, [seed, seed + 500])):
            text = decode(tokenizer, tokens)
            assert ("\ncaption:" in text) == write_caption
            assert ("\nlanguage:" in text) == write_language
            metas = parse_cot(text).metas
            assert_valid_metas(metas, caption=write_caption, language=write_language)
            if b == 0 and write_caption:
                assert metas["caption"] == "a forced caption"
            if b == 0 and write_language:
                assert metas["language"] == "de"


@property_seeds(10)
def test_batch_rows_are_independent(tokenizer, vocab, seeds):
    for seed in seeds:
        seeds = [seed, seed + 100, seed + 200, seed + 300]
        batch = drive(MetadataConstraint(tokenizer, vocab, 4, forced=FORCED, max_caption_tokens=12), vocab, seeds)
        for b, row_seed in enumerate(seeds):
            alone = MetadataConstraint(tokenizer, vocab, 1, forced=[FORCED[b]], max_caption_tokens=12)
            assert drive(alone, vocab, [row_seed]) == [batch[b]]


@property_seeds(10)
def test_caption_is_closed_after_max_caption_tokens(tokenizer, vocab, seeds):
    tables = vocab_tables(tokenizer, vocab)
    # A "model" that never wants to end the caption.
    bias = tables.caption_body.float() * 20 - tables.caption_line_end.float() * 20
    for seed in seeds:
        [tokens] = drive(MetadataConstraint(tokenizer, vocab, 1, max_caption_tokens=6), vocab, [seed], bias=bias)
        caption_name = tables.encode("caption:")
        start = next(i for i in range(len(tokens)) if tokens[i:i + len(caption_name)] == caption_name)
        after = tokens[start + len(caption_name):]
        caption_tokens = after[: after.index(tables.newline_id) + 1]
        assert len(caption_tokens) <= 6 + 1
        assert_valid_metas(parse_cot(decode(tokenizer, tokens)).metas)


def test_without_then_text_only_eos_follows_think_end(tokenizer, vocab):
    constraint = MetadataConstraint(tokenizer, vocab, 1, forced=FORCED[:1])
    generator = torch.Generator().manual_seed(0)
    think_end = tokenizer.convert_tokens_to_ids("</think>")
    while True:
        scores = constraint.apply(torch.randn(1, vocab.vocab_size, generator=generator))
        token = int(scores[0].argmax())
        constraint.advance(torch.tensor([token]))
        if token == think_end:
            break
    allowed = torch.isfinite(constraint.apply(torch.randn(1, vocab.vocab_size, generator=generator))[0])
    assert allowed.nonzero().flatten().tolist() == [vocab.eos_id]


@property_seeds(20)
def test_then_text_writes_free_text_without_codes_then_eos(tokenizer, vocab, seeds):
    special = set(tokenizer.added_tokens_decoder)
    lengths = set()
    for seed in seeds:
        constraint = MetadataConstraint(tokenizer, vocab, 1, then_text=True, max_caption_tokens=4, max_text_tokens=30)
        [tokens] = drive(constraint, vocab, [seed])
        end = tokens.index(tokenizer.convert_tokens_to_ids("</think>"))
        text_tokens = tokens[end + 1:-1]
        assert tokens[-1] == vocab.eos_id and len(text_tokens) <= 30
        assert not any(vocab.is_code(t) or t in special for t in text_tokens)
        lengths.add(len(text_tokens))
        parsed = parse_cot(decode(tokenizer, tokens))
        assert_valid_metas(parsed.metas)
        assert parsed.lyrics == decode(tokenizer, text_tokens).strip()
    assert 30 in lengths  # random text runs until the cap forces EOS


def test_finished_rows_allow_only_eos_and_pad(tokenizer, vocab):
    constraint = MetadataConstraint(tokenizer, vocab, 2, forced=[FORCED[0], {}], max_caption_tokens=3)
    drive(constraint, vocab, [1, 2])
    scores = constraint.apply(torch.zeros(2, vocab.vocab_size))
    for row in scores:
        assert set(torch.isfinite(row).nonzero().flatten().tolist()) == {vocab.eos_id, vocab.pad_id}
    constraint.advance(torch.tensor([vocab.pad_id, vocab.eos_id]))  # ignored once finished
    assert constraint.finished == [True, True]


def test_padded_logit_rows_and_special_tokens_are_never_allowed(tokenizer, vocab):
    constraint = MetadataConstraint(tokenizer, vocab, 1, max_caption_tokens=40)
    generator = torch.Generator().manual_seed(7)
    for _ in range(60):
        scores = constraint.apply(torch.randn(1, vocab.vocab_size, generator=generator) * 3)
        assert not torch.isfinite(scores[0, len(tokenizer):]).any()
        assert not torch.isfinite(scores[0, vocab.first_code_id:vocab.first_code_id + vocab.code_count]).any()
        constraint.advance(scores.argmax(-1))


def test_bad_arguments_and_disallowed_tokens_are_rejected(tokenizer, vocab):
    with pytest.raises(ValueError, match="genres"):
        MetadataConstraint(tokenizer, vocab, 1, forced=[{"genres": "pop"}])
    with pytest.raises(ValueError, match="one dict per row"):
        MetadataConstraint(tokenizer, vocab, 2, forced=[{}])
    with pytest.raises(ValueError, match="duration_range"):
        MetadataConstraint(tokenizer, vocab, 1, duration_range=(30, 10))
    constraint = MetadataConstraint(tokenizer, vocab, 1)
    with pytest.raises(ValueError, match="scores must be"):
        constraint.apply(torch.zeros(1, vocab.vocab_size - 1))
    with pytest.raises(ValueError, match="row 0"):
        constraint.advance(torch.tensor([vocab.first_code_id]))  # "<think>" must come first


def test_tables_are_built_once_per_tokenizer(tokenizer, vocab):
    first = MetadataConstraint(tokenizer, vocab, 1).tables
    assert MetadataConstraint(tokenizer, vocab, 3, then_text=True).tables is first
    assert first.duration_trie(10, 600) is first.duration_trie(10, 600)


@pytest.mark.parametrize("n_codes", [0, 1, 7, 40])
@property_seeds(10)
def test_codes_constraint_writes_exactly_n_codes_then_eos(vocab, n_codes, seeds):
    for seed in seeds:
        constraint = CodesConstraint(vocab, 2, n_codes)
        rows = drive(constraint, vocab, [seed, seed + 50], random_codes=True)
        for tokens in rows:
            assert len(tokens) == n_codes + 1
            assert all(vocab.is_code(t) for t in tokens[:-1]) and tokens[-1] == vocab.eos_id


def test_codes_constraint_counts_per_row_and_keeps_finished_rows_on_eos(vocab):
    constraint = CodesConstraint(vocab, 3, [3, 0, 12])
    rows = drive(constraint, vocab, [4, 5, 6], random_codes=True)
    assert [len(tokens) for tokens in rows] == [4, 1, 13]
    assert all(all(vocab.is_code(t) for t in tokens[:-1]) for tokens in rows)
    scores = constraint.apply(torch.randn(3, vocab.vocab_size))
    for row in scores:
        assert torch.isfinite(row).nonzero().flatten().tolist() == [vocab.eos_id]


def test_codes_constraint_masks_eos_until_the_count_is_reached(vocab):
    constraint = CodesConstraint(vocab, 1, 2)
    eos_favoured = torch.zeros(1, vocab.vocab_size)
    eos_favoured[0, vocab.eos_id] = 100.0
    for _ in range(2):
        scores = constraint.apply(eos_favoured.clone())
        assert scores[0, vocab.eos_id] == float("-inf")
        assert torch.isfinite(scores[0]).sum() == vocab.code_count
        constraint.advance(scores.argmax(-1))
    assert torch.isfinite(constraint.apply(eos_favoured.clone())[0]).nonzero().flatten().tolist() == [vocab.eos_id]


def test_codes_constraint_rejects_bad_counts(vocab):
    with pytest.raises(ValueError, match="one count per row"):
        CodesConstraint(vocab, 2, [1])
    with pytest.raises(ValueError, match=">= 0"):
        CodesConstraint(vocab, 1, -1)


def test_a_row_fed_pad_is_finished_wherever_it_was(tokenizer, vocab):
    # A backend that stops a row (e.g. on a stop token) feeds it pad from then on.
    constraint = MetadataConstraint(tokenizer, vocab, 2)
    first = constraint.apply(torch.zeros(2, vocab.vocab_size)).argmax(-1)
    constraint.advance(torch.tensor([vocab.pad_id, int(first[1])]))
    assert constraint.finished == [True, False]
    codes = CodesConstraint(vocab, 2, 5)
    codes.advance(torch.tensor([vocab.pad_id, vocab.first_code_id]))
    assert codes.finished == [True, False]
    allowed = torch.isfinite(codes.apply(torch.zeros(2, vocab.vocab_size))[0])
    assert allowed.nonzero().flatten().tolist() == [vocab.eos_id]
