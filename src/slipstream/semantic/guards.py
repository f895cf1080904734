"""Cheap checks that veto a semantic match before it is served.

Embeddings place "How do I learn Python?" next to "How do I learn Java?", "Is 5G harmful?" next to "Is 4G
harmful?" and "Why is X good?" next to "Why is X not good?": the sentences differ in one token that carries the
meaning. Each guard looks for one such token class and rejects the candidate when the two prompts disagree on it:

- ``numbers``: the sets of numbers differ ("5", "5.1", "1990s", "2nd"; number words up to twenty).
- ``dates``: month, weekday, relative-day and before/after words differ.
- ``entities``: a capitalised word that is not the first of its sentence (a name, a product, a place), or a
  word in another script, appears in one prompt and nowhere — in any case — in the other. Comparing against
  the other prompt's lowercased words keeps "python" and "Python" together.
- ``negation``: one prompt is negated and the other is not ("not", "never", "n't", "without", ...).
- ``comparison``: the comparison words differ ("better" vs "best", "longest" vs "shortest", "vs", "difference
  between", ...).
- ``short``: a prompt of fewer than ``short_words`` words says too little for its embedding to be reliable; a
  match needs ``short_threshold`` similarity (a raised bar, not a veto).

Every guard can be switched off in config. Which ones are on by default is decided by measurement on the dev
data (``bench/SEMANTIC.md`` has each guard's effect on precision and recall); a guard that does not earn its
place stays available but off.

``TextProfile`` holds what the guards need of one text; the matcher builds it once per stored entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["GUARD_NAMES", "GuardConfig", "TextProfile", "check_guards", "content_words", "fold"]

GUARD_NAMES = ("numbers", "dates", "entities", "negation", "comparison")

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\u2019.\-]*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_PUNCT = re.compile(r"[^\w\s]")
_ANY_WORD = re.compile(r"\w+")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)\s*[\"'(\[]*([A-Za-z][\w'\u2019\-]*)")


def _words(text: str) -> list[str]:
    return text.split()


_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        _words(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen twenty"
        )
    )
}
_NUMBER_WORDS.update(
    {
        "first": "1",
        "second": "2",
        "third": "3",
        "fourth": "4",
        "fifth": "5",
        "hundred": "100",
        "thousand": "1000",
    }
)
_DATE_WORDS = frozenset(
    _words(
        "january february march april may june july august september october november december "
        "jan feb mar apr jun jul aug sep sept oct nov dec "
        "monday tuesday wednesday thursday friday saturday sunday "
        "today tomorrow yesterday tonight weekend before after"
    )
)
_NEGATIONS = frozenset(
    _words(
        "not no never none nobody nothing nowhere neither nor without cannot cant dont doesnt didnt isnt arent "
        "wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt"
    )
)
_COMPARISONS = frozenset(
    _words(
        "vs versus better worse best worst more less most least than compare compared comparison difference "
        "differences between faster slower cheaper bigger smaller larger higher lower longer shorter older "
        "younger longest shortest oldest youngest fastest slowest cheapest biggest smallest largest highest lowest"
    )
)
# Words never treated as entities even when capitalised mid-sentence (pronouns and question words).
_NOT_ENTITIES = frozenset(_words("i i'm i've i'd i'll what why how which who when where is are do does can"))
_STOPWORDS = frozenset(
    _words(
        "a an the is are was were be been being am do does did doing have has had having i me my we our you "
        "your he she it its they them their this that these those to of in on at by for with about as into "
        "from up down out over under again then once here there what which who whom why how when where all "
        "any both each few some such only own same so very s t can will just should now and or but if "
        "because until while get got would could shall may might must one ones"
    )
)


def fold(text: str) -> str:
    """Lowercase, punctuation to spaces, whitespace collapsed: the data README's notion of 'the same text'."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def content_words(text: str) -> frozenset[str]:
    """The folded words that carry meaning (stopwords dropped)."""
    return frozenset(w for w in fold(text).split() if w not in _STOPWORDS)


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """Which guards run, and the bar for short prompts. ``short_words = 0`` switches the short bar off."""

    numbers: bool = True
    dates: bool = True
    entities: bool = True
    negation: bool = True
    comparison: bool = True
    short_words: int = 0
    short_threshold: float = 0.95

    @classmethod
    def none(cls) -> GuardConfig:
        return cls(
            numbers=False, dates=False, entities=False, negation=False, comparison=False, short_words=0
        )


class TextProfile:
    """The token classes of one text that the guards compare."""

    __slots__ = ("comparisons", "dates", "entities", "lowered", "negated", "numbers", "words")

    def __init__(self, text: str) -> None:
        raw = [w.strip(".'\u2019-") for w in _WORD.findall(text)]
        lowered = [w.lower().replace("\u2019", "'") for w in raw if w]
        plain = [w.replace("'", "") for w in lowered]
        self.words = len(lowered)
        self.lowered = frozenset(plain)
        numbers = {_canonical_number(n) for n in _NUMBER.findall(text)}
        numbers.update(_NUMBER_WORDS[w] for w in plain if w in _NUMBER_WORDS)
        self.numbers = frozenset(numbers)
        self.dates = frozenset(w for w in plain if w in _DATE_WORDS)
        # "don't" and "dont" both count: the apostrophe is often left out
        self.negated = any(w in _NEGATIONS for w in plain) or any(w.endswith("n't") for w in lowered)
        self.comparisons = frozenset(w for w in plain if w in _COMPARISONS)
        # Words in other scripts (Chinese, Cyrillic, accented names...) are compared like names: the ASCII
        # word pattern above does not see them, and the model often cannot tell them apart.
        foreign = {w.lower() for w in _ANY_WORD.findall(text) if not w.isascii()}
        self.lowered = self.lowered | foreign
        self.entities = frozenset(_entities(text) | foreign)


def check_guards(query: TextProfile, candidate: TextProfile, config: GuardConfig) -> str | None:
    """The name of the first guard that vetoes the match, or ``None`` when all pass."""
    if config.numbers and query.numbers != candidate.numbers:
        return "numbers"
    if config.dates and query.dates != candidate.dates:
        return "dates"
    if config.negation and query.negated != candidate.negated:
        return "negation"
    if config.comparison and query.comparisons != candidate.comparisons:
        return "comparison"
    if config.entities and (
        not query.entities <= candidate.lowered or not candidate.entities <= query.lowered
    ):
        return "entities"
    return None


def short_bar(query: TextProfile, candidate: TextProfile, config: GuardConfig) -> float:
    """The similarity a match between these two needs at least (0 when the short bar does not apply)."""
    if config.short_words and min(query.words, candidate.words) < config.short_words:
        return config.short_threshold
    return 0.0


def _canonical_number(token: str) -> str:
    return token.replace(",", "")


def _entities(text: str) -> set[str]:
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    found = set()
    for match in _WORD.finditer(text):
        word = match.group().strip(".'\u2019-")
        if not word or not word[0].isupper() or match.start() in starts:
            continue
        lowered = word.lower().replace("\u2019", "'").replace("'", "")
        if lowered in _NOT_ENTITIES or lowered in _STOPWORDS or word.isdigit():
            continue
        found.add(lowered)
    return found
