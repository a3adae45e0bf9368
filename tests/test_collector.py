"""The served worker's garbage collector (gifting_server/collector.py), in a process of
its own: freezing is process-wide, and the tests' own process keeps the default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gifting_server import collector

PROBE = """
import gc
from gifting_server.app import create_app_from_env
before = gc.get_freeze_count()
create_app_from_env()
print(before, gc.get_freeze_count(), *gc.get_threshold())
"""


def test_a_served_worker_freezes_its_start_up_heap_and_raises_the_young_threshold(
    tmp_path: Path,
) -> None:
    env = dict(
        os.environ,
        GIFTING_DATA_DIR=str(tmp_path),
        GIFTING_SECRET="collector-test-secret-0123456789abcdef0123456789",
        GIFTING_REDIS_URL="redis://127.0.0.1:1/0",  # never connected: no lifespan runs
    )
    env.pop("GIFTING_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    before, frozen, young, older, oldest = map(int, result.stdout.split())
    assert before == 0
    # the app's modules, routes and libraries: tens of thousands of objects
    assert frozen > 10_000
    assert (young, older, oldest) == (collector.YOUNG_THRESHOLD, 10, 10)
