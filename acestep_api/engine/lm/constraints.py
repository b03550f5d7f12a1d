"""Token constraints for the 5 Hz LM (docs/pipeline.md#constrained-decoding): the metadata CoT and the codes.

A constraint keeps one state per batch row and, each step, sets every token the row may not
produce to ``-inf``. Everything that depends only on the tokenizer (token texts, masks, the
value trees) is built once per tokenizer and shared; a step costs a few tensor operations per
row and never loops over the vocabulary in Python.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

from acestep_api.engine.lm.cot import (
    BPM_RANGE,
    KEYSCALES,
    LANGUAGES,
    THINK_END,
    THINK_START,
    TIME_SIGNATURES,
    format_cot_line,
)
from acestep_api.engine.lm.vocab import LMVocab

NEG_INF = float("-inf")
FORCIBLE_FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
DEFAULT_DURATION_RANGE = (10, 600)
DEFAULT_MAX_CAPTION_TOKENS = 512  # the official cap on a generated caption
DEFAULT_MAX_TEXT_TOKENS = 1536

# Characters a generated caption may not contain: line breaks end it, "<" could spell
# "</think>" and end the CoT early, backticks are blocked as in the official processor.
CAPTION_BREAKS = ("\n", "\r")
CAPTION_FORBIDDEN = ("<", "`")
_CAPTION_EXCLUDED = CAPTION_BREAKS + CAPTION_FORBIDDEN


class TokenTrie:
    """Prefix tree over token-id sequences; a path from the root to a terminal node spells one
    allowed text in the tokenizer's own split of it."""

    def __init__(self, sequences: list[list[int]]):
        self.children: list[dict[int, int]] = [{}]
        self.terminal: list[bool] = [False]
        for sequence in sequences:
            if not sequence:
                raise ValueError("a TokenTrie sequence must not be empty")
            node = 0
            for token in sequence:
                child = self.children[node].get(token)
                if child is None:
                    child = len(self.children)
                    self.children[node][token] = child
                    self.children.append({})
                    self.terminal.append(False)
                node = child
            self.terminal[node] = True
        self._allowed = [sorted(children) for children in self.children]

    def allowed(self, node: int) -> list[int]:
        return self._allowed[node]

    def step(self, node: int, token: int) -> int | None:
        return self.children[node].get(token)


class VocabTables:
    """What the metadata constraint needs from one tokenizer, built once.

    Cost: one batched decode of the base vocabulary and a few character tests per token
    (O(V)), plus encoding the ~1,000 allowed value lines for the trees.
    """

    def __init__(self, tokenizer: Any, vocab: LMVocab):
        self._tokenizer = weakref.ref(tokenizer)  # the tables are cached per tokenizer: no cycle
        self.vocab = vocab
        size = vocab.vocab_size
        newline = self.encode("\n")
        if len(newline) != 1:
            raise ValueError("the LM tokenizer must encode '\\n' as a single token")
        self.newline_id = newline[0]

        special = set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        special.update({vocab.eos_id, vocab.pad_id})
        limit = min(len(tokenizer), size)
        base_ids = [i for i in range(limit) if i not in special and not vocab.is_code(i)]
        texts = _decode_each(tokenizer, base_ids)

        def mask(predicate) -> torch.Tensor:
            values = torch.zeros(size, dtype=torch.bool)
            chosen = [i for i, text in zip(base_ids, texts) if predicate(text)]
            if chosen:
                values[torch.tensor(chosen, dtype=torch.long)] = True
            return values

        def line_safe(text: str) -> bool:
            return bool(text) and not any(c in text for c in _CAPTION_EXCLUDED)

        # Caption: one or more lines. The first is "caption:", one space, then a word
        # (format_cot's layout); the others are indented continuations, as yaml wraps long
        # captions. Every line needs content.
        self.caption_open = mask(lambda t: line_safe(t) and (t == " " or (t[0] == " " and not t[1:2].isspace())))
        self.caption_lone_space = mask(lambda t: t == " ")
        self.caption_word = mask(lambda t: line_safe(t) and not t[0].isspace())
        self.caption_body = mask(line_safe)
        self.caption_space_start = mask(lambda t: line_safe(t) and t[0] == " ")
        self.caption_content = mask(lambda t: line_safe(t) and bool(t.strip()))
        self.caption_line_end = mask(lambda t: t.endswith("\n") and (t[:-1] == "" or line_safe(t[:-1])))
        self.caption_body_or_end = self.caption_body | self.caption_line_end
        # Free text after the CoT: any ordinary token (no audio codes, no special tokens).
        self.text = mask(bool)
        self.text[vocab.eos_id] = True

        self.think_start = TokenTrie([self.encode(THINK_START + "\n")])
        self.think_end = TokenTrie([self.encode(THINK_END)])
        self.caption_name = TokenTrie([self.encode("caption:")])  # the free text follows
        self.value_tries = {
            "bpm": self.line_trie("bpm", range(BPM_RANGE[0], BPM_RANGE[1] + 1)),
            "keyscale": self.line_trie("keyscale", KEYSCALES),
            "language": self.line_trie("language", LANGUAGES),
            "timesignature": self.line_trie("timesignature", TIME_SIGNATURES),
        }
        self._duration_tries: dict[tuple[int, int], TokenTrie] = {}
        self._on_device: dict[torch.device, dict[str, torch.Tensor]] = {}

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer().encode(text, add_special_tokens=False))

    def line_trie(self, key: str, values) -> TokenTrie:
        """The tree of ``format_cot``'s line for each allowed value of a field."""
        return TokenTrie([self.encode(format_cot_line(key, value)) for value in values])

    def duration_trie(self, low: int, high: int) -> TokenTrie:
        if (low, high) not in self._duration_tries:
            self._duration_tries[(low, high)] = self.line_trie("duration", range(low, high + 1))
        return self._duration_tries[(low, high)]

    def blocked(self, name: str, device: torch.device) -> torch.Tensor:
        """The complement of a mask (True = not allowed) on ``device``, cached."""
        masks = self._on_device.setdefault(device, {})
        if name not in masks:
            masks[name] = (~getattr(self, name)).to(device)
        return masks[name]


def _decode_each(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token's text on its own (the fast tokenizer's Rust batch decode when there is one)."""
    singles = [[i] for i in ids]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.decode_batch(singles, skip_special_tokens=False)
    return tokenizer.batch_decode(singles, skip_special_tokens=False, clean_up_tokenization_spaces=False)


_TABLES: "weakref.WeakKeyDictionary[Any, dict[LMVocab, VocabTables]]" = weakref.WeakKeyDictionary()


def vocab_tables(tokenizer: Any, vocab: LMVocab) -> VocabTables:
    """The shared tables for this tokenizer and vocabulary (built on first use)."""
    per_vocab = _TABLES.setdefault(tokenizer, {})
    if vocab not in per_vocab:
        per_vocab[vocab] = VocabTables(tokenizer, vocab)
    return per_vocab[vocab]


def _keep_only(row: torch.Tensor, ids: list[int]) -> None:
    index = torch.tensor(ids, dtype=torch.long, device=row.device)
    kept = row[index].clone()
    row.fill_(NEG_INF)
    row[index] = kept


def _block(row: torch.Tensor, blocked: torch.Tensor, also_allow: list[int] = ()) -> None:
    if also_allow:
        index = torch.tensor(also_allow, dtype=torch.long, device=row.device)
        kept = row[index].clone()
        row.masked_fill_(blocked, NEG_INF)
        row[index] = kept
    else:
        row.masked_fill_(blocked, NEG_INF)


# Segment kinds of a row's plan and the caption's line states.
TRIE, CAPTION, TEXT, EOS_ONLY, DONE = "trie", "caption", "text", "eos_only", "done"
LINE_START, AFTER_SPACE, LINE_NEEDS_CONTENT, LINE_HAS_CONTENT, AFTER_BREAK = range(5)


@dataclass
class _RowState:
    plan: list[tuple[str, TokenTrie | None]]
    segment: int = 0
    node: int = 0  # position in the current trie
    line: int = LINE_START  # caption line state
    count: int = 0  # tokens written in the current caption or text segment

    @property
    def kind(self) -> str:
        return self.plan[self.segment][0]

    @property
    def trie(self) -> TokenTrie | None:
        return self.plan[self.segment][1]

    def enter(self, segment: int) -> None:
        self.segment, self.node, self.line, self.count = segment, 0, LINE_START, 0


class MetadataConstraint:
    """Phase-1 CoT decoding: ``<think>\\n`` then the fields in ``format_cot``'s layout, then
    ``</think>`` (docs/pipeline.md#constrained-decoding), so every finished row parses with ``parse_cot``.

    - bpm, duration, keyscale, language and timesignature follow token-prefix trees of
      ``format_cot``'s line for every allowed value (duration: integers in ``duration_range``).
    - ``forced`` (one dict per row) force-decodes the given fields: the row's only allowed
      token is the next token of ``format_cot``'s line for that value (``None`` or a blank
      string counts as not given). User values win as given, a forced duration included;
      they are not checked against the allowed sets.
    - The caption is free text: no special tokens, audio codes, ``<`` or backticks. It may
      wrap onto indented continuation lines (as yaml writes long captions); after a line break
      the row either continues with an indented line or starts the next field. After
      ``max_caption_tokens`` tokens the caption is closed. ``parse_cot`` reads plain values
      literally (continuation lines joined by single spaces) and only unquotes a value that
      is a well-formed YAML quoted scalar, so whatever the caption holds reads back as text.
    - ``write_caption=False`` / ``write_language=False`` leave the caption / language line
      out entirely, even when forced, as the official skip flags behind ``use_cot_caption`` /
      ``use_cot_language`` do; the user's own caption and language then stand.
    - Genres are never written (phase 1 skips them).
    - After ``</think>``: with ``then_text`` free text (no audio codes, no special tokens)
      for at most ``max_text_tokens`` tokens, then EOS; without it only EOS.
    - A finished row (after EOS or pad) allows only EOS and pad.
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab: LMVocab,
        batch_size: int,
        *,
        forced: list[dict[str, Any]] | None = None,
        duration_range: tuple[int, int] = DEFAULT_DURATION_RANGE,
        write_caption: bool = True,
        write_language: bool = True,
        then_text: bool = False,
        max_caption_tokens: int = DEFAULT_MAX_CAPTION_TOKENS,
        max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        forced = forced if forced is not None else [{} for _ in range(batch_size)]
        if len(forced) != batch_size:
            raise ValueError(f"forced must have one dict per row ({batch_size}), got {len(forced)}")
        low, high = int(duration_range[0]), int(duration_range[1])
        if not 0 < low <= high:
            raise ValueError("duration_range must be (low, high) with 0 < low <= high")
        if max_caption_tokens < 1 or max_text_tokens < 0:
            raise ValueError("max_caption_tokens must be >= 1 and max_text_tokens >= 0")
        self.tables = vocab_tables(tokenizer, vocab)
        self.vocab = vocab
        self.max_caption_tokens = max_caption_tokens
        self.max_text_tokens = max_text_tokens
        written = [
            key for key in FORCIBLE_FIELDS
            if (key != "caption" or write_caption) and (key != "language" or write_language)
        ]
        tail = (TEXT, None) if then_text else (EOS_ONLY, None)
        self.rows = [
            _RowState(self._plan(index, given, written, (low, high)) + [tail, (DONE, None)])
            for index, given in enumerate(forced)
        ]

    def _plan(
        self, index: int, given: dict[str, Any], written: list[str], durations: tuple[int, int]
    ) -> list[tuple[str, TokenTrie | None]]:
        unknown = sorted(set(given) - set(FORCIBLE_FIELDS))
        if unknown:
            raise ValueError(f"forced[{index}] has unknown field(s) {unknown}; allowed: {', '.join(FORCIBLE_FIELDS)}")
        tables = self.tables
        plan: list[tuple[str, TokenTrie | None]] = [(TRIE, tables.think_start)]
        for key in written:
            value = given.get(key)
            if value is not None and not (isinstance(value, str) and not value.strip()):
                plan.append((TRIE, TokenTrie([tables.encode(format_cot_line(key, value))])))
            elif key == "caption":
                plan.append((TRIE, tables.caption_name))
                plan.append((CAPTION, None))
            elif key == "duration":
                plan.append((TRIE, tables.duration_trie(*durations)))
            else:
                plan.append((TRIE, tables.value_tries[key]))
        plan.append((TRIE, tables.think_end))
        return plan

    @property
    def finished(self) -> list[bool]:
        """Per row: True once it has emitted EOS, or was fed pad (a row its backend stopped)."""
        return [row.kind == DONE for row in self.rows]

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape != (len(self.rows), self.vocab.vocab_size):
            raise ValueError(
                f"scores must be [{len(self.rows)}, {self.vocab.vocab_size}], got {list(scores.shape)}"
            )
        for row, values in zip(self.rows, scores):
            self._apply_row(row, values)
        return scores

    def _apply_row(self, row: _RowState, values: torch.Tensor) -> None:
        tables, device = self.tables, values.device
        kind = row.kind
        if kind == TRIE:
            _keep_only(values, row.trie.allowed(row.node))
        elif kind == CAPTION:
            capped = row.count >= self.max_caption_tokens
            if row.line == LINE_START:
                _block(values, tables.blocked("caption_open", device))
            elif row.line == AFTER_SPACE:
                _block(values, tables.blocked("caption_word", device))
            elif row.line == LINE_NEEDS_CONTENT:
                _block(values, tables.blocked("caption_content" if capped else "caption_body", device))
            elif row.line == LINE_HAS_CONTENT:
                if capped:
                    _keep_only(values, [tables.newline_id])
                else:
                    _block(values, tables.blocked("caption_body_or_end", device))
            else:  # AFTER_BREAK: an indented continuation, or the next field
                next_field = row.plan[row.segment + 1][1].allowed(0)
                if capped:
                    _keep_only(values, next_field)
                else:
                    _block(values, tables.blocked("caption_space_start", device), next_field)
        elif kind == TEXT:
            if row.count >= self.max_text_tokens:
                _keep_only(values, [self.vocab.eos_id])
            else:
                _block(values, tables.blocked("text", device))
        elif kind == EOS_ONLY:
            _keep_only(values, [self.vocab.eos_id])
        else:
            _keep_only(values, sorted({self.vocab.eos_id, self.vocab.pad_id}))

    def advance(self, tokens: torch.Tensor) -> None:
        for index, (row, token) in enumerate(zip(self.rows, tokens.tolist())):
            self._advance_row(index, row, int(token))

    def _advance_row(self, index: int, row: _RowState, token: int) -> None:
        tables = self.tables
        kind = row.kind
        if kind == DONE:
            return
        # Pad is never allowed to an active row: it is what a backend feeds a row it stopped.
        if token == self.vocab.pad_id or (kind in (TEXT, EOS_ONLY) and token == self.vocab.eos_id):
            row.enter(len(row.plan) - 1)
        elif kind == TRIE:
            node = row.trie.step(row.node, token)
            if node is None:
                self._reject(index, token)
            row.node = node
            if row.trie.terminal[node]:
                row.enter(row.segment + 1)
        elif kind == CAPTION:
            self._advance_caption(index, row, token)
        elif kind == TEXT and bool(tables.text[token]):
            row.count += 1
        else:
            self._reject(index, token)

    def _advance_caption(self, index: int, row: _RowState, token: int) -> None:
        tables = self.tables
        if row.line == AFTER_BREAK:
            following = row.plan[row.segment + 1][1]
            if following.step(0, token) is not None:
                row.enter(row.segment + 1)
                self._advance_row(index, row, token)
                return
            allowed = tables.caption_space_start
        elif row.line == LINE_HAS_CONTENT and bool(tables.caption_line_end[token]):
            row.line, row.count = AFTER_BREAK, row.count + 1
            return
        elif row.line == LINE_START:
            allowed = tables.caption_open
        elif row.line == AFTER_SPACE:
            allowed = tables.caption_word
        else:
            allowed = tables.caption_body
        if not bool(allowed[token]):
            self._reject(index, token)
        row.count += 1
        if row.line == LINE_START and bool(tables.caption_lone_space[token]):
            row.line = AFTER_SPACE
        elif bool(tables.caption_content[token]):
            row.line = LINE_HAS_CONTENT
        elif row.line != LINE_HAS_CONTENT:
            row.line = LINE_NEEDS_CONTENT

    def _reject(self, index: int, token: int) -> None:
        raise ValueError(f"row {index}: token {token} is not allowed in the {self.rows[index].kind} segment")


class CodesConstraint:
    """Phase-2 decoding: only audio-code tokens and EOS; EOS is masked until the row has
    written exactly its ``n_codes`` codes, then forced (docs/pipeline.md#constrained-decoding, "Codes").
    A finished row (after EOS, or fed pad by a backend that stopped it) allows only EOS."""

    def __init__(self, vocab: LMVocab, batch_size: int, n_codes: int | list[int]):
        counts = [n_codes] * batch_size if isinstance(n_codes, int) else list(n_codes)
        if len(counts) != batch_size:
            raise ValueError(f"n_codes must be an int or one count per row ({batch_size}), got {len(counts)}")
        if any(n < 0 for n in counts):
            raise ValueError("n_codes must be >= 0")
        self.vocab = vocab
        self.targets = torch.tensor(counts, dtype=torch.long)
        self.written = torch.zeros(batch_size, dtype=torch.long)
        self.done = torch.zeros(batch_size, dtype=torch.bool)

    @property
    def finished(self) -> list[bool]:
        return self.done.tolist()

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        vocab = self.vocab
        if scores.shape != (len(self.targets), vocab.vocab_size):
            raise ValueError(f"scores must be [{len(self.targets)}, {vocab.vocab_size}], got {list(scores.shape)}")
        first, end = vocab.first_code_id, vocab.first_code_id + vocab.code_count
        coding = ((self.written < self.targets) & ~self.done).to(scores.device)
        eos = scores[:, vocab.eos_id].clone()
        scores[coding, :first] = NEG_INF
        scores[coding, end:] = NEG_INF
        ending = ~coding
        scores[ending] = NEG_INF
        scores[ending, vocab.eos_id] = eos[ending]
        return scores

    def advance(self, tokens: torch.Tensor) -> None:
        tokens = tokens.to("cpu", torch.long)
        vocab = self.vocab
        is_code = (tokens >= vocab.first_code_id) & (tokens < vocab.first_code_id + vocab.code_count)
        self.written += (is_code & ~self.done).long()
        self.done |= (tokens == vocab.eos_id) | (tokens == vocab.pad_id)
