"""The CoT text: the constants, format_cot's exact layout and parse_cot's tolerant reading."""

from __future__ import annotations

import pytest

from acestep_api.engine.lm.cot import (
    BPM_RANGE,
    COT_FIELDS,
    KEYSCALES,
    LANGUAGES,
    TIME_SIGNATURES,
    format_cot,
    format_cot_line,
    parse_cot,
)

CJK_CAPTION = "一首温柔的中文流行歌曲，钢琴与弦乐，女声演唱"
LONG_CAPTION = (
    "An emotional ballad that opens with solo piano and a breathy female vocal, then builds "
    "through warm strings and soft drums into a soaring final chorus with layered harmonies"
)


def test_constants_match_the_official_sets():
    assert len(KEYSCALES) == len(set(KEYSCALES)) == 70
    for keyscale in ("C major", "A minor", "F# minor", "Bb major", "E♭ minor", "G♯ major", "Cb major"):
        assert keyscale in KEYSCALES
    assert "H major" not in KEYSCALES and "C Major" not in KEYSCALES
    assert len(LANGUAGES) == len(set(LANGUAGES)) == 51
    assert LANGUAGES[-1] == "unknown" and {"en", "zh", "ja", "yue", "no", "ht", "la"} <= set(LANGUAGES)
    assert TIME_SIGNATURES == (2, 3, 4, 6)
    assert BPM_RANGE == (30, 300)
    assert COT_FIELDS == ("bpm", "caption", "duration", "keyscale", "language", "timesignature")


def test_format_cot_writes_sorted_yaml_inside_think_tags():
    metas = {
        "timesignature": "4/4",
        "language": "en",
        "keyscale": "C major",
        "duration": 30,
        "caption": "An upbeat pop song",
        "bpm": 120,
    }
    assert format_cot(metas) == (
        "<think>\n"
        "bpm: 120\n"
        "caption: An upbeat pop song\n"
        "duration: 30\n"
        "keyscale: C major\n"
        "language: en\n"
        "timesignature: 4\n"
        "</think>"
    )


def test_format_cot_converts_digit_strings_and_skips_absent_values():
    text = format_cot({"bpm": "95", "duration": "180", "timesignature": "3", "caption": None, "genres": "pop"})
    assert text == "<think>\nbpm: 95\nduration: 180\ntimesignature: 3\n</think>"
    assert format_cot({}) == "<think>\n\n</think>"
    # Only "/4" meters are shortened, as in the official code.
    assert format_cot({"timesignature": "6/8"}) == "<think>\ntimesignature: 6/8\n</think>"


def test_format_cot_quotes_what_yaml_must_quote():
    assert format_cot({"caption": "Verse: soft piano"}) == "<think>\ncaption: 'Verse: soft piano'\n</think>"
    assert format_cot({"language": "no"}) == "<think>\nlanguage: 'no'\n</think>"
    assert format_cot({"caption": CJK_CAPTION}) == f"<think>\ncaption: {CJK_CAPTION}\n</think>"


def test_format_cot_wraps_long_captions_at_80_columns():
    # yaml breaks a plain scalar at the first space past column 80 and indents by two:
    # "caption: " plus 15 five-column words reaches column 83.
    caption = " ".join(["word"] * 20)
    assert format_cot({"caption": caption}) == (
        "<think>\ncaption: " + " ".join(["word"] * 15) + "\n  " + " ".join(["word"] * 5) + "\n</think>"
    )


ROUND_TRIP_METAS = [
    {"bpm": 120, "caption": "An upbeat pop song", "duration": 30, "keyscale": "C major", "language": "en",
     "timesignature": "4"},
    {"bpm": 30, "caption": CJK_CAPTION, "duration": 600, "keyscale": "B♭ minor", "language": "zh",
     "timesignature": "3"},
    {"bpm": 300, "caption": LONG_CAPTION, "duration": 10, "keyscale": "F# major", "language": "unknown",
     "timesignature": "6"},
    {"caption": "Verse: " + LONG_CAPTION, "language": "no"},  # quoted and wrapped
    {"caption": "It's a \"quoted\" song #1, with: colons", "duration": 95.5},
    {"caption": "1999", "bpm": 88},  # a digit-only caption is written as a number
    {"caption": "yes"},
    {"caption": "- starts like a list [and] {braces} & *stars*"},
    {"keyscale": "G♯ minor", "timesignature": "2"},
    {"caption": CJK_CAPTION * 4},  # no spaces: never wrapped
    {},
]


@pytest.mark.parametrize("metas", ROUND_TRIP_METAS)
def test_parse_cot_reads_back_what_format_cot_wrote(metas):
    parsed = parse_cot(format_cot(metas))
    assert parsed.metas == metas
    assert parsed.lyrics == ""
    assert parsed.raw == format_cot(metas)


def test_round_trip_normalises_the_meter_digit_strings_and_padding():
    parsed = parse_cot(format_cot({"timesignature": "4/4", "bpm": "140", "duration": "200"}))
    assert parsed.metas == {"timesignature": "4", "bpm": 140, "duration": 200}
    assert parse_cot(format_cot({"caption": "  padded caption  "})).metas == {"caption": "padded caption"}


def test_round_trip_over_every_keyscale_and_language():
    for keyscale in KEYSCALES:
        assert parse_cot(format_cot({"keyscale": keyscale})).metas == {"keyscale": keyscale}
    for language in LANGUAGES:
        assert parse_cot(format_cot({"language": language})).metas == {"language": language}


@pytest.mark.parametrize("metas", [m for m in ROUND_TRIP_METAS if m])
def test_format_cot_line_pieces_make_up_format_cot(metas):
    body = "".join(format_cot_line(key, metas[key]) for key in COT_FIELDS if key in metas)
    assert format_cot(metas) == "<think>\n" + body + "</think>"


def test_parse_cot_joins_wrapped_caption_lines_and_ignores_garbage():
    text = (
        "<think>\n"
        "bpm: 73\n"
        "caption: A calm piano melody that drifts\n"
        "  slowly over soft rain,\n"
        "\twith distant strings.\n"
        "this line is garbage\n"
        "duration: 273\n"
        "genres: Chinese folk\n"
        "mood: calm\n"
        "keyscale:   G major  \n"
        "language: EN\n"
        "timesignature: 4\n"
        "</think>\n\n"
        "# Lyric\n[Verse]\nla la la\n<|im_end|>"
    )
    parsed = parse_cot(text)
    assert parsed.metas == {
        "bpm": 73,
        "caption": "A calm piano melody that drifts slowly over soft rain, with distant strings.",
        "duration": 273,
        "genres": "Chinese folk",
        "keyscale": "G major",
        "language": "en",
        "timesignature": "4",
    }
    assert parsed.lyrics == "[Verse]\nla la la"


@pytest.mark.parametrize(
    "line",
    [
        "bpm: 29", "bpm: 301", "bpm: fast", "bpm: 120.5", "duration: 9", "duration: 601", "duration: long",
        "keyscale: H major", "keyscale: C dorian", "keyscale: C", "language: xx", "language: english",
        "timesignature: 5", "timesignature: 7/8", "timesignature: four", "caption:", "caption:   ",
    ],
)
def test_parse_cot_drops_invalid_values(line):
    assert parse_cot(f"<think>\n{line}\nbpm: 100\n</think>").metas == {"bpm": 100}


def test_parse_cot_reads_broken_or_empty_quoting_literally():
    text = "<think>\ncaption: 'It''s' and more\nlanguage: ''\n</think>"
    assert parse_cot(text).metas == {"caption": "'It''s' and more"}
    assert parse_cot("<think>\ncaption: ''\n</think>").metas == {"caption": "''"}
    assert parse_cot('<think>\ncaption: "a: b"\n</think>').metas == {"caption": "a: b"}


def test_parse_cot_accepts_loose_spellings_of_valid_values():
    text = "<think>\nBPM: 120.0\nkeyscale: f# MINOR\ntimesignature: 6/8\nduration: 120.0\n</think>"
    assert parse_cot(text).metas == {"bpm": 120, "keyscale": "F# minor", "timesignature": "6", "duration": 120.0}


def test_parse_cot_without_tags_or_with_a_truncated_block():
    assert parse_cot("bpm: 90\nkeyscale: D minor<|audio_code_12|>").metas == {"bpm": 90, "keyscale": "D minor"}
    truncated = parse_cot("<think>\nbpm: 90\ncaption: cut off mid")
    assert truncated.metas == {"bpm": 90, "caption": "cut off mid"} and truncated.lyrics == ""
    closed = parse_cot("bpm: 91\n</think>\nhello")
    assert closed.metas == {"bpm": 91} and closed.lyrics == "hello"
    assert parse_cot("").metas == {} and parse_cot("random words, no fields").metas == {}


def test_lyrics_keep_text_that_is_not_a_header():
    assert parse_cot("<think>\n</think>\n# Lyrics\n[Chorus]\nhey").lyrics == "[Chorus]\nhey"
    assert parse_cot("<think>\n</think>[Verse]\n# Lyric in the middle").lyrics == "[Verse]\n# Lyric in the middle"
    assert parse_cot("<think>\n</think>\n\n# lyric").lyrics == ""
