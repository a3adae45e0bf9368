"""Loads the Lua scripts shipped with the package and calls them with EVALSHA.

redis-py's `Script` sends EVALSHA and, on NOSCRIPT (a restarted or flushed
Redis), loads the script and retries, so callers never see that error.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

SCRIPT_NAMES = (
    "send_gift",
    "recharge",
    "cashout",
    "set_daily_limit",
    "start_stream",
    "end_stream",
    "close_streaks",
    "publish_state",
)


def script_source(name: str) -> str:
    return (resources.files("gifting_server.ledger") / "lua" / f"{name}.lua").read_text()


class Scripts:
    """One registered script per state change, looked up by name."""

    def __init__(self, redis: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    async def run(self, name: str, keys: list[str], args: list[Any]) -> list[Any]:
        result = await self._scripts[name](keys=keys, args=args)
        assert isinstance(result, list)
        return result
