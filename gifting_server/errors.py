"""Error codes, in one place: HTTP status, WebSocket error frames and close codes,
and Lua return codes.

A Lua script answers `{0, ...}` on success or `{code}` with one of `ScriptCode`;
`SCRIPT_ERRORS` turns that code into the public `ErrorCode`.
"""

from __future__ import annotations

import math
from enum import Enum, IntEnum
from typing import Any


class ErrorCode(Enum):
    """A public error: its snake_case code and the HTTP status it travels with."""

    def __init__(self, code: str, http_status: int) -> None:
        self.code = code
        self.http_status = http_status

    UNAUTHORIZED = ("unauthorized", 401)
    # an overlay token minted before the stream's overlay tokens were rotated
    TOKEN_REVOKED = ("token_revoked", 401)
    INVALID_SIGNATURE = ("invalid_signature", 401)
    FORBIDDEN = ("forbidden", 403)
    AGE_VERIFICATION_REQUIRED = ("age_verification_required", 403)
    SELF_GIFT = ("self_gift", 403)
    DAILY_LIMIT_EXCEEDED = ("daily_limit_exceeded", 403)
    CASHOUT_DAILY_CAP = ("cashout_daily_cap", 403)
    NOT_STREAM_OWNER = ("not_stream_owner", 403)
    MESSAGE_NOT_ALLOWED = ("message_not_allowed", 403)
    # the stream's messages are not read aloud, or not this send's (`tts_min_coins`)
    SPEECH_NOT_ALLOWED = ("speech_not_allowed", 403)
    INSUFFICIENT_FUNDS = ("insufficient_funds", 402)
    INSUFFICIENT_DIAMONDS = ("insufficient_diamonds", 402)
    NOT_FOUND = ("not_found", 404)
    UNKNOWN_GIFT = ("unknown_gift", 404)
    UNKNOWN_STREAM = ("unknown_stream", 404)
    UNKNOWN_PACKAGE = ("unknown_package", 404)
    UNKNOWN_EVENT = ("unknown_event", 404)
    UNKNOWN_CASHOUT = ("unknown_cashout", 404)
    UNKNOWN_WEBHOOK = ("unknown_webhook", 404)
    UNKNOWN_BATTLE = ("unknown_battle", 404)
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405)
    STREAM_NOT_LIVE = ("stream_not_live", 409)
    STREAM_ID_TAKEN = ("stream_id_taken", 409)
    IDEMPOTENCY_CONFLICT = ("idempotency_conflict", 409)
    NOTHING_TO_REFUND = ("nothing_to_refund", 409)
    # a cash-out already completed with the other status
    CASHOUT_CONFLICT = ("cashout_conflict", 409)
    # a battle step in the wrong state, or a stream already in a battle, or not live
    BATTLE_CONFLICT = ("battle_conflict", 409)
    PAYLOAD_TOO_LARGE = ("payload_too_large", 413)
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 415)
    INVALID_REQUEST = ("invalid_request", 422)
    CASHOUT_BELOW_MINIMUM = ("cashout_below_minimum", 422)
    RATE_LIMITED = ("rate_limited", 429)
    # the client hung up before its request was all in: nobody reads the answer, but
    # the metrics count it (nginx's 499) rather than as a server error
    CLIENT_CLOSED_REQUEST = ("client_closed_request", 499)
    INTERNAL_ERROR = ("internal_error", 500)
    STORAGE_CORRUPT = ("storage_corrupt", 503)
    SERVICE_UNAVAILABLE = ("service_unavailable", 503)


class CloseCode(IntEnum):
    """Every code the server closes a WebSocket with, and what the client does next:
    "since" = reconnect (with backoff) and resubscribe with `since`, the last event
    id it has, so it misses nothing; "new token" = reconnecting with the same token
    cannot help.

    | code | why                                                        | then      |
    | ---- | ---------------------------------------------------------- | --------- |
    | 1002 | a frame broke RFC 6455 (closed by the websockets library)  | since     |
    | 1007 | a text message that is not UTF-8                           | since     |
    | 1009 | a message over `max_message_bytes` (the websockets library)| since     |
    | 1011 | an unexpected error in the WebSocket protocol code         | since     |
    | 1012 | the server is restarting                                   | since     |
    | 4001 | no token, a bad one, an expired one (reason                | new token |
    |      | `token_expired`) or a revoked overlay token (reason        |           |
    |      | `token_revoked`: the stream's overlay tokens were rotated) |           |
    | 4003 | forbidden (reserved: this version answers a forbidden      | new token |
    |      | request with an `error` frame and keeps the connection)    |           |
    | 4008 | rate limited: too many messages in a row over the rate     | since     |
    | 4009 | too slow: the connection's outbox overflowed               | since     |

    The browser pages mirror this table once: `CLOSE_RULES` in `overlay/hub.js`.
    """

    PROTOCOL_ERROR = 1002
    INVALID_TEXT = 1007
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    UNAUTHORIZED = 4001
    FORBIDDEN = 4003  # in the contract; never sent by this version
    RATE_LIMITED = 4008
    TOO_SLOW = 4009

    @property
    def needs_new_token(self) -> bool:
        """Reconnecting with the same token cannot help: every other code reconnects
        and resubscribes with `since` (the last event id it has)."""
        return self in (CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN)


class GiftingError(Exception):
    """A refusal the client can act on. Nothing was changed when it is raised.

    `retry_after_ms`: when the client should try again (an overloaded worker's
    `service_unavailable`); the WebSocket error frame and the HTTP error body carry
    it as `retry_after_ms`, and HTTP adds `Retry-After` (`retry_after_header`)."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms

    def to_dict(self) -> dict[str, dict[str, Any]]:
        error: dict[str, Any] = {"code": self.code.code, "message": self.message}
        if self.retry_after_ms is not None:
            error["retry_after_ms"] = self.retry_after_ms
        return {"error": error}

    def headers(self) -> dict[str, str] | None:
        """The HTTP headers of this refusal's answer."""
        if self.retry_after_ms is None:
            return None
        return {"Retry-After": retry_after_header(self.retry_after_ms)}


def retry_after_header(retry_after_ms: int) -> str:
    """HTTP's Retry-After counts whole seconds: rounded up, at least 1."""
    return str(max(1, math.ceil(retry_after_ms / 1000)))


class ScriptCode(IntEnum):
    """Return codes shared by every Lua script (mirrored in each script's header)."""

    OK = 0
    IDEMPOTENCY_CONFLICT = 1
    UNKNOWN_STREAM = 2
    STREAM_NOT_LIVE = 3
    SELF_GIFT = 4
    AGE_VERIFICATION_REQUIRED = 5
    INSUFFICIENT_FUNDS = 6
    DAILY_LIMIT_EXCEEDED = 7
    RATE_LIMITED = 8
    NOTHING_TO_REFUND = 9
    INSUFFICIENT_DIAMONDS = 10
    CASHOUT_BELOW_MINIMUM = 11
    CASHOUT_DAILY_CAP = 12
    NOT_STREAM_OWNER = 13
    STREAM_ID_TAKEN = 14
    WRONG_KEY_TYPE = 15
    INVALID_ARGUMENT = 16
    CORRUPT_VALUE = 17
    UNKNOWN_EVENT = 18
    UNKNOWN_CASHOUT = 19
    CASHOUT_CONFLICT = 20
    BATTLE_CONFLICT = 21
    UNKNOWN_BATTLE = 22
    BATTLE_NOT_OVER = 23
    BATTLE_EXPIRED = 24
    UNKNOWN_WEBHOOK = 25


SCRIPT_ERRORS: dict[ScriptCode, tuple[ErrorCode, str]] = {
    ScriptCode.IDEMPOTENCY_CONFLICT: (
        ErrorCode.IDEMPOTENCY_CONFLICT,
        "this idempotency key was already used for a different request; use a new key",
    ),
    ScriptCode.UNKNOWN_STREAM: (ErrorCode.UNKNOWN_STREAM, "no such stream"),
    ScriptCode.STREAM_NOT_LIVE: (ErrorCode.STREAM_NOT_LIVE, "the stream is not live"),
    ScriptCode.SELF_GIFT: (ErrorCode.SELF_GIFT, "you cannot send gifts to your own stream"),
    ScriptCode.AGE_VERIFICATION_REQUIRED: (
        ErrorCode.AGE_VERIFICATION_REQUIRED,
        "gifting needs an age-verified (18+) account",
    ),
    ScriptCode.INSUFFICIENT_FUNDS: (
        ErrorCode.INSUFFICIENT_FUNDS,
        "not enough coins; recharge to send this gift",
    ),
    ScriptCode.DAILY_LIMIT_EXCEEDED: (
        ErrorCode.DAILY_LIMIT_EXCEEDED,
        "this gift would pass your own daily spending limit",
    ),
    ScriptCode.RATE_LIMITED: (ErrorCode.RATE_LIMITED, "too many gifts; slow down"),
    ScriptCode.NOTHING_TO_REFUND: (
        ErrorCode.NOTHING_TO_REFUND,
        "no un-refunded purchase of this package for this user; retry after the payment arrives",
    ),
    ScriptCode.INSUFFICIENT_DIAMONDS: (
        ErrorCode.INSUFFICIENT_DIAMONDS,
        "not enough diamonds past the holding period",
    ),
    ScriptCode.CASHOUT_BELOW_MINIMUM: (
        ErrorCode.CASHOUT_BELOW_MINIMUM,
        "the cash-out is below the minimum",
    ),
    ScriptCode.CASHOUT_DAILY_CAP: (
        ErrorCode.CASHOUT_DAILY_CAP,
        "the cash-out would pass today's cash-out cap; try a smaller amount or tomorrow",
    ),
    ScriptCode.NOT_STREAM_OWNER: (
        ErrorCode.NOT_STREAM_OWNER,
        "this stream belongs to someone else",
    ),
    ScriptCode.STREAM_ID_TAKEN: (
        ErrorCode.STREAM_ID_TAKEN,
        "this stream id belongs to someone else",
    ),
    ScriptCode.UNKNOWN_CASHOUT: (ErrorCode.UNKNOWN_CASHOUT, "no such cash-out"),
    ScriptCode.UNKNOWN_WEBHOOK: (ErrorCode.UNKNOWN_WEBHOOK, "no such webhook"),
    ScriptCode.CASHOUT_CONFLICT: (
        ErrorCode.CASHOUT_CONFLICT,
        "this cash-out was already completed with the other status",
    ),
    ScriptCode.BATTLE_CONFLICT: (
        ErrorCode.BATTLE_CONFLICT,
        "the stream is already in a battle (a pending invite or a live battle)",
    ),
    ScriptCode.UNKNOWN_BATTLE: (ErrorCode.UNKNOWN_BATTLE, "no such battle"),
    # Only between the server's own steps (ledger/battles.py waits and tries again).
    ScriptCode.BATTLE_NOT_OVER: (ErrorCode.BATTLE_CONFLICT, "the battle is not over yet"),
    ScriptCode.BATTLE_EXPIRED: (
        ErrorCode.BATTLE_CONFLICT,
        "the invite expired before it was accepted",
    ),
    ScriptCode.WRONG_KEY_TYPE: (
        ErrorCode.STORAGE_CORRUPT,
        "a storage key has an unexpected type; nothing was changed; run `gifting-server reconcile`",
    ),
    # The server passed a script a number it cannot use (a configuration out of range):
    # the server's fault, not the request's, and refused before anything was written.
    ScriptCode.INVALID_ARGUMENT: (
        ErrorCode.INTERNAL_ERROR,
        "the server passed the ledger a value out of range (check its configuration); "
        "nothing was changed",
    ),
    ScriptCode.CORRUPT_VALUE: (
        ErrorCode.STORAGE_CORRUPT,
        "a stored number is not an integer; nothing was changed; run `gifting-server reconcile`",
    ),
    ScriptCode.UNKNOWN_EVENT: (
        ErrorCode.UNKNOWN_EVENT,
        "no gift with this event_id in the stream's history (it may be older than the history)",
    ),
}


def script_error(code: int) -> GiftingError:
    error, message = SCRIPT_ERRORS[ScriptCode(code)]
    return GiftingError(error, message)
