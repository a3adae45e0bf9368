"""The speech engine on its own: off without espeak-ng, the cache, the WAV sizes."""

from __future__ import annotations

import shutil
import struct

import pytest

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.speech import Speech, fixed_header


async def test_without_espeak_ng_speech_is_service_unavailable() -> None:
    with pytest.raises(GiftingError) as refused:
        await Speech(None).wav("s1", 1, "hello")
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert "espeak-ng is not installed" in refused.value.message


def test_the_placeholder_sizes_are_set_to_the_real_ones() -> None:
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 22050, 44100, 2, 16)
    wav = b"RIFF" + struct.pack("<I", 0x7FFFF024) + b"WAVE" + fmt
    wav += b"data" + struct.pack("<I", 0x7FFFF000) + b"\x01\x00" * 10
    fixed = fixed_header(wav)
    assert struct.unpack_from("<I", fixed, 4)[0] == len(wav) - 8
    assert struct.unpack_from("<I", fixed, 40)[0] == 20
    with pytest.raises(GiftingError):
        fixed_header(b"RIFF\x00\x00\x00\x00JUNK")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
async def test_the_cache_keeps_the_latest_renders_up_to_its_size() -> None:
    speech = Speech.installed()
    speech.entries = 2
    first = await speech.wav("s1", 1, "one")
    await speech.wav("s1", 2, "two")
    assert await speech.wav("s1", 1, "changed text is not read again") == first
    await speech.wav("s1", 3, "three")
    assert list(speech.cache) == [("s1", 1), ("s1", 3)]  # 2 was the least recently used
