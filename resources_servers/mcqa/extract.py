"""Which option a free-text reply to a multiple-choice question chooses, or why it chooses none.

Models answer in many shapes (`Answer: C`, `(C)`, `\\boxed{C}`, `C. Mercury`, `... so C.`, just `Mercury`), so the
extractor tries rules from the most explicit signal to the least, and the first rule that finds a letter decides:

1. `marker`: an explicit answer marker: `Answer: C`, `the correct answer is (C)`, `\\boxed{C}`, `I choose C`,
   `C is correct`. Its payload is a letter (any case, formatted as `(C)`, `C)`, `**C**`, `option C`) or the text of
   one option. With several markers the LAST one decides, so a reply that corrects itself is judged on its
   correction; but markers that between them name every option decide nothing (the reply answered everything).
2. `only_letter`: the whole reply is one letter, possibly formatted (`C`, `(c)`, `**C**`, `C)`), or its first line
   starts with a list label (`C. Mercury`, `C) ...`) and no other line starts with another one.
3. `option_text`: the whole reply is the text of exactly one option.
4. `end_letter`: the reply ends with a standalone letter (`..., so C.`).
5. `formatted_letter`: letters written as labels anywhere (`(C)`, `[C]`, `**C**`, `C)`), all the same one.
6. `bare_letter`: capital letters standing alone, all the same one; an `A` followed by a word ("A good question")
   is the article, not an answer.
7. `option_text_mentioned`: the text of exactly one option (one with a letter in it) appears in the reply.

Rules 4-7 ignore letters inside option texts (the C of "Vitamin C") and negated letters ("not B"). Wherever a rule
finds several different letters (`A or B`, `A, B, C or D`, a list of every option) the reply hedges and gets no
answer (rule `hedged`): naming several answers must never score. A letter followed by a different option's text
(`B. Mercury` or `Answer: B) Mercury` when Mercury is C) contradicts itself and answers nothing (rule `conflict`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_WORD = r"[^\W_]"  # a letter or digit, in any script
_LATEX = re.compile(r"\\(?:boxed|fbox|text|textbf|textrm|mathrm|mathbf|mbox)\s*")
_PLAIN_DROP = re.compile(r"[*`$]")

# 1. markers. Each is followed by its payload.
_ADVERBS = (
    r"(?:(?:clearly|probably|likely|definitely|obviously|certainly|therefore|thus|then|indeed|most\s+likely)"
    r"\s*,?\s*)?"
)
_ANSWER_MARKER = re.compile(
    r"(?:\banswer|\b(?:correct|right|best|final|my|the\s+only)\s+(?:option|choice|letter))[\"']?\s*"
    r"(?:\bis\b|:|=|-|–|—|\b(?:would|should|must|will|has\s+to)\s+be\b)\s*" + _ADVERBS,
    re.I,
)
_CHOICE_MARKER = re.compile(
    r"\bI(?:(?:\s+would|\s+will|['’]d|['’]ll|\s+am\s+going\s+to|['’]m\s+going\s+to)?\s+"
    r"(?:choose|pick|select|go\s+with|say)|(?:\s+am|['’]m)\s+going\s+with)\b\s*" + _ADVERBS,
    re.I,
)
_REVERSE_MARKER = re.compile(
    r"(?<!" + _WORD + r")(?:(?i:option|choice)\s+)?[(\[]?([A-Z])[)\]]?\s+(?:is|seems)\s+(?:the\s+)?"
    r"(?i:correct|right|best)\b"
)
_NOT_A_CLAIM = re.compile(r"\b(?:whether|if|why|not|check|checking)\s*$", re.I)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")

# Reading a payload: one letter, or a run of them joined by separators (a hedge).
_LEAD = re.compile(r"[\s:=\-–—'\"“”‘’]*")
_TOKEN = re.compile(r"(?:(?:either|option|choice|letter)\s+)*[(\[{]?\s*([A-Za-z])\s*[)\]}]?(?!" + _WORD + ")", re.I)
_EXPLICIT_SEP = r"\s*(?:,\s*(?i:or|and|nor)\b|,|/|&|\b(?i:or|and|nor|vs)\b\.?)\s*"
_SEP = re.compile(_EXPLICIT_SEP + r"|\s+")
_NEGATED_AFTER = re.compile(r"\s+(?:(?:is|was|are)\s+(?:not|wrong|incorrect|false)\b|(?:isn|wasn|aren)['’]t\b)", re.I)
_ARTICLE_AFTER = re.compile(r"\s+[A-Za-z]")
_CLAUSE_END = re.compile(r"\n|[.;!?](?=\s|$)")

# 2. the whole reply is a letter / starts with a list label.
_ONLY_LETTER = re.compile(r"[\s(\[{*\"'“‘]*(?:(?:option|choice|letter)\s+)?([A-Za-z])[\s)\]}*.!:\"'”’]*", re.I)
_LINE_LABEL = re.compile(r"^[ \t>*\-]*\(?([A-Za-z])[.:)\]](?:[ \t]+(.*))?$", re.M)

# 4-6. letters anywhere, in the reply with option texts masked out.
_END_LETTER = re.compile(r"(?<!" + _WORD + r")(?<![A-Za-z]\.)[(\[{]?([A-Za-z])[)\]}]?[\s.!)\]}\"'”’»]*$")
# A list before a letter: `A, B or `, `either A or `, `A B `; a lower-case "a" counts only before a separator
# word or sign ("a or b"), since "it's a C" has the article.
_LIST_TAIL = re.compile(
    r"(?:(?<!" + _WORD + r")(?:(?i:either)\s+)?[(\[{]?(?:[B-Zb-z]|A|a(?=[)\]}]?" + _EXPLICIT_SEP + r"))[)\]}]?"
    r"(?:" + _EXPLICIT_SEP + r"|\s+))+$"
)
_TAIL_LETTER = re.compile(r"(?<!" + _WORD + r")[A-Za-z](?!" + _WORD + ")")
_FORMATTED = re.compile(
    r"\(([A-Za-z])\)|\[([A-Za-z])\]|\*\*\s*\(?([A-Za-z])\)?\s*\*\*|(?<!" + _WORD + r")(?<![(\[])([A-Z])\)"
    r"|^[ \t>*\-]*([A-Z])[.:][ \t]",
    re.M,
)
_BARE = re.compile(r"(?<!" + _WORD + r")(?<![A-Za-z]\.)(?<![-'’])([A-Z])(?!" + _WORD + r")(?![-'’+]|\.[A-Za-z])")
_NEGATED_BEFORE = re.compile(
    r"(?:\bnot|n['’]t|\bnever|\bexcept|\bexcluding|\bnor|\brule\s+out|\beliminate)\s+(?:(?:option|choice)\s+)?"
    r"[(\[*]*$",
    re.I,
)
_FOLLOWING_WORD = re.compile(r"[ \t]+([A-Za-z]{2,})")
_VERBS_AFTER_A_LETTER = frozenset(
    {
        "is",
        "was",
        "seems",
        "looks",
        "fits",
        "matches",
        "would",
        "should",
        "could",
        "must",
        "or",
        "and",
        "because",
        "since",
        "as",
    }
)
_MASK = " \u00a4 "
_PAYLOAD_WINDOW = 300
"""How far a marker's payload (or a list before a letter) is read: keeps long replies linear."""


@dataclass(frozen=True)
class Extraction:
    """The letter a reply chooses (None: no single answer), which rule decided, and a readable reason."""

    letter: str | None
    rule: str
    reason: str
    named: tuple[str, ...] = ()
    """Every letter the deciding rule saw; several of them is a hedge."""


def parse_options(raw: Any) -> dict[str, str]:
    """Letter -> text from a row's `options`: a list of {letter, text} or a {letter: text} dict."""
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        if not all(isinstance(item, Mapping) for item in raw):
            raise ValueError('`options` must be a list of {"letter": "A", "text": "..."} objects')
        pairs = [(item.get("letter"), item.get("text")) for item in raw]
    else:
        raise ValueError(
            '`options` must be a list of {"letter": ..., "text": ...} objects or a {letter: text} '
            f"object, not {type(raw).__name__}"
        )
    options: dict[str, str] = {}
    for letter, text in pairs:
        if not isinstance(letter, str) or not re.fullmatch(r"[A-Za-z]", letter.strip()):
            raise ValueError(f"option letter {letter!r} is not a single letter A-Z")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"option {letter.strip().upper()} has no text")
        key = letter.strip().upper()
        if key in options:
            raise ValueError(f"option letter {key} appears twice")
        options[key] = text.strip()
    if len(options) < 2:
        raise ValueError("a multiple-choice row needs at least two options")
    return options


def normalize(text: str) -> str:
    """Case, spacing and punctuation don't matter when comparing texts: 'Vitamin-D.' == 'vitamin d'."""
    return " ".join(re.findall(_WORD + "+", text.casefold()))


def strip_reasoning(text: str) -> str:
    """The reply proper: closed <think> blocks are reasoning; an unclosed one never reached an answer."""
    if "</think>" in text.lower():
        text = text[text.lower().rfind("</think>") + len("</think>") :]
    start = text.lower().find("<think>")
    return text[:start] if start >= 0 else text


class _Question:
    """The options of one question, with the patterns that find their texts in a reply."""

    def __init__(self, options: Mapping[str, str]) -> None:
        self.options = dict(options)
        self.letters = frozenset(self.options)
        self.normalized = {letter: normalize(text) for letter, text in self.options.items()}
        self.patterns: dict[str, re.Pattern[str]] = {}
        for letter, text in self.options.items():
            words = re.findall(_WORD + "+", text)
            if len("".join(words)) < 2:
                continue  # a one-character option text would mask letters themselves
            body = r"[\W_]+".join(re.escape(w) for w in words)
            flags = re.I if len("".join(words)) > 2 else 0  # "Na" is sodium, "na" is not
            self.patterns[letter] = re.compile(r"(?<!" + _WORD + ")" + body + "(?!" + _WORD + ")", flags)

    def letter_of_text(self, text: str) -> str | None:
        """The option whose whole text `text` is."""
        found = [letter for letter, norm in self.normalized.items() if norm and norm == normalize(text)]
        return found[0] if len(found) == 1 else None

    def letter_at_start(self, text: str) -> str | None:
        """The option whose text `text` starts with (the longest, so "4 and 5" beats "4")."""
        norm = normalize(text)
        for letter, option in sorted(self.normalized.items(), key=lambda item: -len(item[1])):
            if option and (norm == option or norm.startswith(option + " ")):
                return letter
        return None

    def masked(self, text: str) -> str:
        """`text` with every option text blanked, so the C of "Vitamin C" is not read as a letter."""
        for pattern in sorted(self.patterns.values(), key=lambda p: -len(p.pattern)):
            text = pattern.sub(_MASK, text)
        return text

    def mentioned(self, text: str) -> list[str]:
        """Letters of the options (with a letter in their text) whose text appears in `text`, ignoring mentions
        inside a longer option's mention."""
        spans = [
            (m.start(), m.end(), letter)
            for letter, pattern in self.patterns.items()
            if re.search(r"[^\W\d_]", self.options[letter])
            for m in pattern.finditer(text)
        ]
        kept = {
            letter
            for start, end, letter in spans
            if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)
        }
        return sorted(kept)


def extract_answer(reply: str, options: Mapping[str, str]) -> Extraction:
    """The option letter `reply` chooses under the rules in this module's docstring."""
    question = _Question(options)
    text = strip_reasoning(reply or "").strip()
    if not text:
        return Extraction(None, "empty", "the reply has no text outside its reasoning")
    plain = _PLAIN_DROP.sub("", text)
    for rule in (
        _by_marker,
        _naming_every_option,
        _by_only_letter,
        _by_option_text,
        _by_end_letter,
        _by_formatted_letter,
        _by_bare_letter,
        _by_mentioned_text,
    ):
        found = rule(text, plain, question)
        if found is not None:
            return found
    return Extraction(None, "none", "no answer letter or option text found in the reply")


def _hedged(letters: list[str], where: str) -> Extraction:
    named = tuple(sorted(set(letters)))
    reason = f"the reply names several letters ({', '.join(named)}) {where}, not a single answer"
    return Extraction(None, "hedged", reason, named)


def _conflict(letter: str, said: str, question: _Question) -> Extraction:
    return Extraction(
        None,
        "conflict",
        f"the reply gives the letter {letter} but the text of option {said} ('{question.options[said]}')",
        (letter, said),
    )


def _decided(letter: str, rule: str, why: str) -> Extraction:
    return Extraction(letter, rule, f"{letter} from {why}", (letter,))


def _snippet(text: str, start: int, end: int) -> str:
    shown = " ".join(text[start:end].split())
    return shown if len(shown) <= 60 else shown[:57] + "..."


# ---------------------------------------------------------------------------------------------- 1. markers


def _by_marker(text: str, plain: str, question: _Question) -> Extraction | None:
    """Every explicit marker with an informative payload, in reply order; the last one decides."""
    claims: list[tuple[int, list[str], str, str | None]] = []  # (where, letters, snippet, contradicting option)
    for pattern in (_ANSWER_MARKER, _CHOICE_MARKER):
        for match in pattern.finditer(plain):
            payload = plain[match.end() : match.end() + _PAYLOAD_WINDOW]
            letters, other = _payload_letters(payload, question, whole=False)
            if letters:
                claims.append((match.start(), letters, _snippet(plain, match.start(), match.end() + 12), other))
    for match in _REVERSE_MARKER.finditer(plain):
        before = plain[max(0, match.start() - _PAYLOAD_WINDOW) : match.start()]
        if match.group(1) not in question.letters or _NOT_A_CLAIM.search(before):
            continue
        listed = _list_letters_before(before, question)
        claims.append((match.start(), [*listed, match.group(1)], _snippet(plain, match.start(), match.end()), None))
    for start, inner in _boxed(plain):
        letters, other = _payload_letters(inner, question, whole=True)
        if letters:
            claims.append((start, letters, _snippet(plain, start, start + len(inner) + 8), other))
    if not claims:
        return None
    claims.sort(key=lambda claim: claim[0])
    everything = {letter for _, letters, _, _ in claims for letter in letters}
    if everything >= question.letters:
        return _hedged(sorted(everything), "in its answer markers taken together")
    _, letters, shown, other = claims[-1]
    if len(set(letters)) > 1:
        return _hedged(letters, f"in its final answer marker '{shown}'")
    if other is not None:
        return _conflict(letters[0], other, question)
    earlier = sorted({letter for _, named, _, _ in claims[:-1] for letter in named} - {letters[0]})
    note = f" (it overrides the earlier {', '.join(earlier)})" if earlier else ""
    return _decided(letters[0], "marker", f"the final answer marker '{shown}'{note}")


def _boxed(text: str) -> list[tuple[int, str]]:
    """(start, content) of every \\boxed{...}, braces matched."""
    found = []
    for match in _BOXED.finditer(text):
        depth, position, stop = 1, match.end(), min(len(text), match.end() + _PAYLOAD_WINDOW)
        while position < stop and depth:
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            position += 1
        if depth == 0:
            found.append((match.start(), text[match.end() : position - 1]))
    return found


def _payload_letters(payload: str, question: _Question, *, whole: bool) -> tuple[list[str], str | None]:
    """What a marker's payload names: an option's text, a letter, or several letters (a hedge); [] if neither.
    Second: the other option whose text follows a single letter (`C) Argon` when Argon is D), if any."""
    payload = _LATEX.sub("", payload)
    lead = _LEAD.match(payload)  # matches any string (everything in it is optional)
    body = payload[lead.end() if lead else 0 :]
    clause = body if whole else _CLAUSE_END.split(body, maxsplit=1)[0]
    if (letter := question.letter_of_text(clause.strip("{}() "))) is not None:
        return [letter], None
    run, end = _letter_run(body, question)
    if len(run) == 1:
        rest = body[end:].lstrip(" \t.):]-–—")
        said = question.letter_of_text(_CLAUSE_END.split(rest, maxsplit=1)[0])
        return run, said if said not in (None, run[0]) else None
    if run:
        return run, None
    letter = question.letter_at_start(clause)
    return ([letter] if letter else []), None


def _letter_run(text: str, question: _Question) -> tuple[list[str], int]:
    """`C` -> [C]; `(A) or (B)`, `A, B, C or D`, `either A or B` -> every letter; stops at anything else.
    Second: where the last letter read ends."""
    found: list[str] = []
    position = end = 0
    while match := _TOKEN.match(text, position):
        letter = match.group(1)
        if letter.upper() not in question.letters:
            break
        if letter == "a" and _ARTICLE_AFTER.match(text, match.end()):
            break  # "the answer is a bit subtle": the article
        if found and _NEGATED_AFTER.match(text, match.end()):
            break  # "Answer: B, and A is wrong": a new clause, not a second answer
        found.append(letter.upper())
        end = match.end()
        separator = _SEP.match(text, end)
        if separator is None:
            break
        position = separator.end()
    return found, end


def _list_letters_before(text: str, question: _Question) -> list[str]:
    """Letters of a list that ends right where `text` ends: `either A or ` -> [A]."""
    tail = _LIST_TAIL.search(text[-_PAYLOAD_WINDOW:])
    if tail is None:
        return []
    return [m.group().upper() for m in _TAIL_LETTER.finditer(tail.group()) if m.group().upper() in question.letters]


# ---------------------------------------------------------------------------------------------- 2-3. whole reply


def _by_only_letter(text: str, plain: str, question: _Question) -> Extraction | None:
    if (match := _ONLY_LETTER.fullmatch(text)) and match.group(1).upper() in question.letters:
        return _decided(match.group(1).upper(), "only_letter", f"a reply that is just '{text.strip()}'")
    labels = [
        (m.group(1).upper(), m.group(2) or "", m.start())
        for m in _LINE_LABEL.finditer(text)
        if m.group(1).upper() in question.letters
    ]
    if not labels or labels[0][2] > 0 or len({label for label, _, _ in labels}) > 1:  # `text` is stripped
        return None
    letter, rest, _ = labels[0]
    if _NEGATED_AFTER.match(" " + rest) or _letters_anywhere(text, plain, question) - {letter}:
        return None  # "(A) is wrong. (C) Mercury.": a label, but not the answer
    said = question.letter_of_text(_CLAUSE_END.split(rest, maxsplit=1)[0])
    if said is not None and said != letter:
        return _conflict(letter, said, question)
    return _decided(letter, "only_letter", f"the label that starts the reply ('{_snippet(text, 0, 40)}')")


def _by_option_text(text: str, plain: str, question: _Question) -> Extraction | None:
    if (letter := question.letter_of_text(text)) is not None:
        return _decided(letter, "option_text", f"a reply that is exactly the text of option {letter}")
    return None


# ---------------------------------------------------------------------------------------------- 4-7. anywhere


def _negated(text: str, start: int) -> bool:
    return _NEGATED_BEFORE.search(text[max(0, start - 40) : start]) is not None


def _by_end_letter(text: str, plain: str, question: _Question) -> Extraction | None:
    masked = question.masked(plain)
    match = _END_LETTER.search(masked)
    if match is None or match.group(1).upper() not in question.letters or _negated(masked, match.start()):
        return None
    letters = [*_list_letters_before(masked[: match.start()], question), match.group(1).upper()]
    if len(set(letters)) > 1:
        return _hedged(letters, "at its end")
    shown = _snippet(plain, max(0, len(plain) - 40), len(plain))
    return _decided(letters[0], "end_letter", f"the letter the reply ends with ('{shown}')")


def _formatted_letters(text: str, question: _Question) -> set[str]:
    masked = question.masked(text)
    return {
        letter.upper()
        for match in _FORMATTED.finditer(masked)
        for letter in [next(g for g in match.groups() if g)]
        if letter.upper() in question.letters
        and not _negated(masked, match.start())
        and not _NEGATED_AFTER.match(masked, match.end())
    }


def _letters_anywhere(text: str, plain: str, question: _Question) -> set[str]:
    """Letters the reply writes as labels or standing alone, not negated and not inside option texts."""
    return _formatted_letters(text, question) | set(_bare_letters(plain, question))


def _naming_every_option(text: str, plain: str, question: _Question) -> Extraction | None:
    """Without a marker, a reply that names every option letter somewhere ("A. B. C. D.") has answered none."""
    if _letters_anywhere(text, plain, question) >= question.letters:
        return _hedged(sorted(question.letters), "without an answer marker")
    return None


def _by_formatted_letter(text: str, plain: str, question: _Question) -> Extraction | None:
    return _one_letter(sorted(_formatted_letters(text, question)), "formatted_letter", "as labels like (C)")


def _by_bare_letter(text: str, plain: str, question: _Question) -> Extraction | None:
    return _one_letter(_bare_letters(plain, question), "bare_letter", "as a capital standing alone")


def _bare_letters(plain: str, question: _Question) -> list[str]:
    masked = question.masked(plain)
    letters = []
    for match in _BARE.finditer(masked):
        letter = match.group(1)
        if (
            letter not in question.letters
            or _negated(masked, match.start())
            or _NEGATED_AFTER.match(masked, match.end())
        ):
            continue
        following = _FOLLOWING_WORD.match(masked, match.end())
        if letter == "A" and following and following.group(1).lower() not in _VERBS_AFTER_A_LETTER:
            continue  # "A good question": the article
        letters.append(letter)
    return letters


def _by_mentioned_text(text: str, plain: str, question: _Question) -> Extraction | None:
    letters = question.mentioned(plain)
    if len(letters) > 1:
        return _hedged(letters, "by mentioning their option texts")
    if letters:
        return _decided(
            letters[0],
            "option_text_mentioned",
            f"the only option text the reply mentions ('{question.options[letters[0]]}')",
        )
    return None


def _one_letter(letters: list[str], rule: str, what: str) -> Extraction | None:
    if not letters:
        return None
    if len(set(letters)) > 1:
        return _hedged(letters, what)
    return _decided(letters[0], rule, f"the only letter the reply writes {what}")
