"""Gift messages, sans I/O: the text a viewer typed made fit to store and show.

`cleaned` removes control characters (line breaks and tabs become spaces) and
trims; `masked` hides every blocked word with `*`, one per character it covers.
Blocked words match anywhere in the text, whatever the case or accents: both
sides are compared folded (`fold`: NFKD, combining marks, joiners and variation
selectors dropped, casefolded), so "Bäd", "BAD", the full-width "\uff42\uff41\uff44" and "b\u200dad"
all match "bad". A match inside a longer word is masked too: a blocked word never
reaches a page in any spelling the fold recognizes.
"""

from __future__ import annotations

import hashlib
import unicodedata

# Format characters kept: the joiner of emoji sequences (👨‍👩‍👧). Every other one (bidi
# overrides, invisible separators) can disguise a text or hide a blocked word.
_KEPT_FORMAT = frozenset({"\u200d"})
# Default-ignorable characters (Unicode) that are not format characters: a renderer
# shows them as nothing or a blank, so between two letters they hide a blocked word.
# `cleaned` drops these (the grapheme joiner, fillers, Khmer's invisible vowels)...
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")
# ...and matching skips the variation selectors, which a text keeps: an emoji's
# presentation needs them (❤️ is U+2764 U+FE0F). Their combining class is 0, so
# `unicodedata.combining` does not catch them.
_SELECTORS = frozenset(
    [chr(c) for c in range(0xFE00, 0xFE10)]
    + [chr(c) for c in range(0xE0100, 0xE01F0)]
    + ["\u180b", "\u180c", "\u180d", "\u180f"]
)
MASK = "*"


def cleaned(text: str) -> str:
    """Control characters out (a line or paragraph break, a tab: a space), trimmed.
    Empty when nothing is left: then the gift has no message."""
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            if char.isspace():
                out.append(" ")
        elif char in _INVISIBLE or (
            category in ("Cf", "Cs", "Co", "Cn") and char not in _KEPT_FORMAT
        ):
            continue
        else:
            out.append(char)
    return "".join(out).strip()


def fold(text: str) -> str:
    """What matching compares: no case, no accents, compatibility forms unified."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = (
        c
        for c in decomposed
        if not unicodedata.combining(c)
        and c not in _KEPT_FORMAT
        and c not in _SELECTORS
        and c not in _INVISIBLE
    )
    return "".join(kept).casefold()


def masked(text: str, blocked: tuple[str, ...]) -> str:
    """`text` with every character that a blocked word's match covers replaced by MASK
    (with the marks that follow it)."""
    words = [w for w in (fold(word) for word in blocked) if w]
    if not words:
        return text
    folded: list[str] = []
    origin: list[int] = []  # for each folded character, the index of its source character
    for at, char in enumerate(text):
        part = fold(char)
        folded.append(part)
        origin.extend([at] * len(part))
    flat = "".join(folded)
    hidden = [False] * len(text)
    for word in words:
        start = flat.find(word)
        while start != -1:
            first, last = origin[start], origin[start + len(word) - 1]
            for at in range(first, last + 1):
                hidden[at] = True
            # A mark or joiner after the match (a character that folds to nothing)
            # belongs to its last letter.
            after = last + 1
            while after < len(text) and not folded[after]:
                hidden[after] = True
                after += 1
            start = flat.find(word, start + 1)
    return "".join(MASK if hide else char for char, hide in zip(text, hidden, strict=True))


def digest(text: str) -> str:
    """A short, fixed-size stand-in for a message in a request's fingerprint."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]
