"""Who is asking: signed tokens (PyJWT, HS256) and payment webhook signatures.

Identity always comes from a verified token, never from a request body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum

import jwt

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ids import ID_RULE, is_id

ISSUER = "gifting_server"
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_NAME_LENGTH = 64
MAX_GENERATION = 2**53 - 1  # exact in Lua and JavaScript
# The WebSocket close reasons of a token that no longer counts (close code 4001): the
# overlays tell a streamer which of the two happened.
TOKEN_EXPIRED = "token_expired"
TOKEN_REVOKED = "token_revoked"


class Role(StrEnum):
    VIEWER = "viewer"
    STREAMER = "streamer"
    OVERLAY = "overlay"
    ADMIN = "admin"


@dataclass(frozen=True)
class Identity:
    user_id: str
    name: str
    role: Role
    adult: bool = False
    stream_id: str | None = None  # overlay tokens are bound to one stream
    # An overlay token's generation (claim `gen`; 0 when absent, as the CLI mints
    # them): revoked once the stream's overlay generation is above it
    # (`ledger/overlay_tokens.py`). Not part of who it is.
    generation: int = field(default=0, compare=False)
    # unix seconds after which the token no longer counts (its `exp`); None: never.
    # Not part of who it is: two tokens of one user compare equal.
    expires_at: int | None = field(default=None, compare=False)

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise GiftingError(ErrorCode.FORBIDDEN, f"this needs a {allowed} token")


class TokenExpired(GiftingError):
    """An expired token: `unauthorized` on HTTP, close reason `token_expired`."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.UNAUTHORIZED, "token expired; get a new one")


def revoked() -> GiftingError:
    return GiftingError(
        ErrorCode.TOKEN_REVOKED,
        "this overlay link was replaced by a newer one; copy the new link from the studio",
    )


def issue_token(
    secret: str,
    user_id: str,
    role: Role,
    *,
    name: str | None = None,
    adult: bool = False,
    stream_id: str | None = None,
    ttl_s: int = 86_400,
    now: float | None = None,
    generation: int = 0,
) -> str:
    if not is_id(user_id):
        raise ValueError(f"user id: {ID_RULE}")
    if stream_id is not None and not is_id(stream_id):
        raise ValueError(f"stream id: {ID_RULE}")
    if role is Role.OVERLAY and not stream_id:
        raise ValueError("an overlay token needs a stream")
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": user_id,
        "name": display_name(name or user_id),
        "role": role.value,
        "adult": adult,
        "iat": issued,
        "exp": issued + ttl_s,
    }
    if stream_id:
        claims["stream"] = stream_id
    if generation:
        claims["gen"] = generation
    return jwt.encode(claims, secret, algorithm="HS256")


def display_name(name: str) -> str:
    """At most MAX_NAME_LENGTH characters, and valid UTF-8: a token minted elsewhere
    may carry a lone surrogate (JSON's "\\ud800"), which no event could encode."""
    return _SURROGATE.sub("\ufffd", name[:MAX_NAME_LENGTH])


def verify_token(secret: str, token: str) -> Identity:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=ISSUER,
            options={"require": ["exp", "sub", "role", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired() from None
    except jwt.PyJWTError:
        raise GiftingError(ErrorCode.UNAUTHORIZED, "invalid token") from None
    user_id, role, name = claims.get("sub"), claims.get("role"), claims.get("name")
    stream = claims.get("stream")
    if not is_id(user_id):
        raise GiftingError(ErrorCode.UNAUTHORIZED, "invalid token subject")
    try:
        parsed_role = Role(str(role))
    except ValueError:
        raise GiftingError(ErrorCode.UNAUTHORIZED, "invalid token role") from None
    if stream is not None and not is_id(stream):
        raise GiftingError(ErrorCode.UNAUTHORIZED, "invalid token stream")
    generation = claims.get("gen", 0)
    if type(generation) is not int or not 0 <= generation <= MAX_GENERATION:
        raise GiftingError(ErrorCode.UNAUTHORIZED, "invalid token generation")
    return Identity(
        user_id=user_id,
        name=display_name(name) if isinstance(name, str) and name else user_id,
        role=parsed_role,
        adult=claims.get("adult") is True,
        stream_id=stream,
        expires_at=int(claims["exp"]),
        generation=generation,
    )


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise GiftingError(ErrorCode.UNAUTHORIZED, "missing Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GiftingError(ErrorCode.UNAUTHORIZED, "expected Authorization: Bearer <token>")
    return token.strip()


def sign_webhook(secret: str, body: bytes, timestamp: int) -> str:
    """The `Gifting-Signature` header value a payment provider sends with `body`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_webhook(
    secret: str, body: bytes, header: str | None, tolerance_s: int, now: float | None = None
) -> None:
    if not header:
        raise GiftingError(ErrorCode.INVALID_SIGNATURE, "missing Gifting-Signature header")
    parts: dict[str, str] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, value)
    timestamp = parts.get("t", "")
    if (
        not (timestamp.isascii() and timestamp.isdigit())
        or len(timestamp) > 12
        or "v1" not in parts
    ):
        raise GiftingError(ErrorCode.INVALID_SIGNATURE, "malformed Gifting-Signature header")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        raise GiftingError(
            ErrorCode.INVALID_SIGNATURE,
            f"signature timestamp is more than {tolerance_s}s away from now",
        )
    expected = sign_webhook(secret, body, int(timestamp)).rpartition("v1=")[2]
    # bytes: compare_digest refuses a str that is not ASCII (headers are latin-1)
    if not hmac.compare_digest(expected.encode(), parts["v1"].encode()):
        raise GiftingError(ErrorCode.INVALID_SIGNATURE, "signature does not match the body")
