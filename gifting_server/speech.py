"""Gift messages as speech: WAV audio rendered by a local espeak-ng, for the alerts
overlay to play. OBS does not capture a page's speechSynthesis when it controls the
source's audio, so the page plays audio the server made; nothing is fetched at run
time. Each worker keeps the latest renders in a bounded LRU cache."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
from collections import OrderedDict

from gifting_server import metrics
from gifting_server.errors import ErrorCode, GiftingError

MAX_CHARS = 500  # the most of a message spoken: `[messages] max_length_limit`'s default
MAX_WAV_BYTES = 8 * 1024 * 1024  # 500 characters take ~2 MB at espeak-ng's 22 kHz mono
RENDER_TIMEOUT_S = 10.0
CACHE_ENTRIES = 64  # ~64 x 200 kB for messages of typical length
CONCURRENT_RENDERS = 2  # per worker: a burst of requests cannot start a process each
READ_CHUNK = 64 * 1024


class Speech:
    """espeak-ng (None: not installed, speech is off) and this worker's cache of
    renders by (stream, event id)."""

    def __init__(self, engine: str | None, entries: int = CACHE_ENTRIES) -> None:
        self.engine = engine
        self.entries = entries
        self.cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self.rendering = asyncio.Semaphore(CONCURRENT_RENDERS)

    @classmethod
    def installed(cls) -> Speech:
        return cls(shutil.which("espeak-ng"))

    async def wav(self, stream_id: str, event_id: int, text: str) -> bytes:
        key = (stream_id, event_id)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache.move_to_end(key)
            return cached
        async with self.rendering:
            cached = self.cache.get(key)  # rendered while this request waited its turn
            audio = cached if cached is not None else await self.render(text)
        self.cache[key] = audio
        while len(self.cache) > self.entries:
            self.cache.popitem(last=False)
        return audio

    async def render(self, text: str) -> bytes:
        if self.engine is None:
            raise GiftingError(
                ErrorCode.SERVICE_UNAVAILABLE, "speech is off: espeak-ng is not installed"
            )
        try:
            audio = await _espeak(self.engine, text[:MAX_CHARS])
        except GiftingError:
            metrics.SPEECH_RENDERS.labels(outcome="failed").inc()
            raise
        metrics.SPEECH_RENDERS.labels(outcome="ok").inc()
        return audio


async def _espeak(engine: str, text: str) -> bytes:
    # The text goes in on stdin (`--stdin`), never as an argument: a message such as
    # "--help" is spoken, not read as an option. `-b 1`: the input is UTF-8.
    process = await asyncio.create_subprocess_exec(
        engine,
        "--stdout",
        "--stdin",
        "-b",
        "1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        audio = await asyncio.wait_for(_run(process, text.encode()), RENDER_TIMEOUT_S)
    except TimeoutError:
        raise _failed("espeak-ng took too long") from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.returncode != 0 or not audio.startswith(b"RIFF"):
        raise _failed(f"espeak-ng exited with {process.returncode}")
    return fixed_header(audio)


async def _run(process: asyncio.subprocess.Process, text: bytes) -> bytes:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(text)
    await process.stdin.drain()
    process.stdin.close()
    audio = bytearray()
    while chunk := await process.stdout.read(READ_CHUNK):
        audio += chunk
        if len(audio) > MAX_WAV_BYTES:
            raise _failed("the speech is over its size cap")
    await process.wait()
    return bytes(audio)


def fixed_header(wav: bytes) -> bytes:
    """espeak-ng writing to a pipe cannot seek back, so its RIFF and data sizes are
    placeholders (0x7ffff000-ish): set them to the real sizes."""
    data = wav.find(b"data", 12)
    if wav[8:12] != b"WAVE" or data < 0 or len(wav) < data + 8:
        raise _failed("espeak-ng wrote no WAV")
    head = bytearray(wav)
    struct.pack_into("<I", head, 4, len(wav) - 8)
    struct.pack_into("<I", head, data + 4, len(wav) - data - 8)
    return bytes(head)


def _failed(why: str) -> GiftingError:
    return GiftingError(ErrorCode.SERVICE_UNAVAILABLE, f"speech failed: {why}")
