"""Gift messages made fit to store and show (sans I/O): controls out, trimmed,
blocked words masked whatever their case, accents or compatibility forms."""

from __future__ import annotations

import pytest

from gifting_server.ledger import messages


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("  hello  ", "hello"),
        ("line\nbreak\ttab", "line break tab"),
        ("no\x00nul\x07bell", "nonulbell"),
        ("bidi\u202eflip\u2066", "bidiflip"),
        ("zero\u200bwidth", "zerowidth"),
        ("family 👨\u200d👩\u200d👧", "family 👨\u200d👩\u200d👧"),
        ("para\u2029graph", "para graph"),
        (" \n\t\u200b ", ""),
    ],
)
def test_cleaned_drops_controls_and_trims(typed: str, kept: str) -> None:
    assert messages.cleaned(typed) == kept


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("darn it", "**** it"),
        ("DARN it", "**** it"),
        ("Därn it", "**** it"),
        ("da\u0308rn it", "***** it"),  # the combining mark goes with its letter
        ("\uff44\uff41\uff52\uff4e it", "**** it"),  # full-width
        ("d\u200darn", "*****"),  # a joiner inside the word
        ("undarnable", "un****able"),  # inside a longer word too
        ("darndarn", "********"),
        ("fine words", "fine words"),
    ],
)
def test_masked_hides_every_spelling_of_a_blocked_word(text: str, shown: str) -> None:
    assert messages.masked(text, ("Darn",)) == shown


def test_a_word_that_folds_to_more_letters_is_masked_whole() -> None:
    assert messages.masked("Straße!", ("strasse",)) == "******!"
    assert messages.masked("the ﬁne print", ("fine",)) == "the *** print"


def test_no_blocked_words_or_only_empty_ones_change_nothing() -> None:
    assert messages.masked("darn", ()) == "darn"
    assert messages.masked("darn", ("\u0301",)) == "darn"


def test_the_digest_is_fixed_in_size_and_tells_messages_apart() -> None:
    assert len(messages.digest("x" * 1000)) == len(messages.digest("")) == 32
    assert messages.digest("hello") != messages.digest("hello ")


@pytest.mark.parametrize(
    "hidden",
    [
        "\u034f",  # combining grapheme joiner: a mark of combining class 0
        "\ufe0f",  # variation selector 16
        "\ufe00",  # variation selector 1
        "\U000e0100",  # variation selector 17
        "\u180b",  # Mongolian free variation selector
        "\u17b4",  # Khmer inherent vowel, invisible
        "\u3164",  # Hangul filler
        "\u115f",  # Hangul choseong filler
        "\uffa0",  # half-width Hangul filler
    ],
)
def test_an_invisible_character_between_letters_does_not_hide_a_blocked_word(
    hidden: str,
) -> None:
    text = messages.cleaned(f"oh d{hidden}a{hidden}rn")
    shown = messages.masked(text, ("darn",))
    assert shown.startswith("oh ") and set(shown[3:]) == {"*"}, repr(shown)


@pytest.mark.parametrize("hidden", ["\u034f", "\u3164", "\u115f", "\uffa0", "\u17b4"])
def test_cleaned_drops_characters_that_render_as_nothing(hidden: str) -> None:
    """Default-ignorable characters a renderer shows as nothing (or a blank) go like the
    zero-width ones; variation selectors stay (an emoji's presentation needs them)."""
    assert messages.cleaned(f"a{hidden}b") == "ab"
    assert messages.cleaned("love \u2764\ufe0f") == "love \u2764\ufe0f"
