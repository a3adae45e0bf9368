"""The worker's garbage collector: its start-up heap frozen, its young collections rarer.

A collection stops the event loop while it walks every object of the generations it
collects. A started worker holds about 57,000 objects of its own code and libraries
(modules, classes, functions) that live as long as it does, and under load about as
many again for its connections; CPython's default thresholds (700, 10, 10) then ran a
full collection every 2 s at 4,000 gifts/s, each 40 to 175 ms of a stopped loop: the
long tail of the acknowledged gifts (docs/performance.md, "The collector's pauses").

- `gc.freeze()` once the worker has started moves its start-up heap out of every
  generation: no collection walks it again, and a full one walks half the objects.
- A young collection every `YOUNG_THRESHOLD` objects allocated (net of those freed)
  instead of 700: most of a gift's objects (its task, futures, frames, dicts) are
  freed before the next one, so far fewer survive into the older generations, whose
  growth is what starts a full collection.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 7000


def settle() -> None:
    """Once per worker, when its code is loaded: collect what start-up left, freeze
    the rest, and raise the young generation's threshold (the older two are kept)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
