"""Tokens (issue, verify, every way they can be wrong) and webhook signatures."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from gifting_server.auth import (
    ISSUER,
    MAX_NAME_LENGTH,
    Identity,
    Role,
    bearer_token,
    issue_token,
    sign_webhook,
    verify_token,
    verify_webhook,
)
from gifting_server.errors import ErrorCode, GiftingError

SECRET = "unit-token-secret-" + "0123456789abcdef" * 3  # 66 bytes: HS512 without warnings
HOOK_SECRET = "unit-webhook-secret-0123456789abcdef012345"


def raw_token(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "name": "Alice",
        "role": "viewer",
        "adult": True,
        "iat": now,
        "exp": now + 60,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def unauthorized(token: str, secret: str = SECRET) -> GiftingError:
    with pytest.raises(GiftingError) as caught:
        verify_token(secret, token)
    assert caught.value.code is ErrorCode.UNAUTHORIZED
    return caught.value


@pytest.mark.parametrize("role", list(Role))
def test_token_round_trip_for_every_role(role: Role) -> None:
    stream = "s1" if role is Role.OVERLAY else None
    token = issue_token(SECRET, "alice", role, name="Alice", adult=True, stream_id=stream)
    assert verify_token(SECRET, token) == Identity("alice", "Alice", role, True, stream)


def test_defaults_name_is_the_user_and_not_adult() -> None:
    who = verify_token(SECRET, issue_token(SECRET, "bob", Role.VIEWER))
    assert (who.name, who.adult, who.stream_id) == ("bob", False, None)


def test_long_names_are_cut() -> None:
    who = verify_token(SECRET, issue_token(SECRET, "bob", Role.VIEWER, name="B" * 500))
    assert who.name == "B" * MAX_NAME_LENGTH
    long_claim = raw_token(claims(name="N" * 500))
    assert verify_token(SECRET, long_claim).name == "N" * MAX_NAME_LENGTH


def test_issue_refuses_bad_user_ids_and_streamless_overlays() -> None:
    with pytest.raises(ValueError, match="user id"):
        issue_token(SECRET, "bad id", Role.VIEWER)
    with pytest.raises(ValueError, match="user id"):
        issue_token(SECRET, "a" * 65, Role.VIEWER)
    for trailing_newline in ("u\n", "a" * 64 + "\n"):
        with pytest.raises(ValueError, match="user id"):
            issue_token(SECRET, trailing_newline, Role.VIEWER)
    with pytest.raises(ValueError, match="stream id"):
        issue_token(SECRET, "st", Role.OVERLAY, stream_id="s1\n")
    with pytest.raises(ValueError, match="overlay token needs a stream"):
        issue_token(SECRET, "st", Role.OVERLAY)


def test_expired_token() -> None:
    token = issue_token(SECRET, "alice", Role.VIEWER, ttl_s=60, now=time.time() - 120)
    assert "expired" in unauthorized(token).message


def test_wrong_secret() -> None:
    unauthorized(issue_token("another-secret-0123456789abcdef0123456789", "alice", Role.VIEWER))


def test_tampered_payload() -> None:
    header, payload, signature = issue_token(SECRET, "alice", Role.VIEWER).split(".")
    decoded = jwt.utils.base64url_decode(payload)
    assert b'"viewer"' in decoded
    forged = jwt.utils.base64url_encode(decoded.replace(b'"viewer"', b'"admin"')).decode()
    unauthorized(f"{header}.{forged}.{signature}")


def test_tampered_signature() -> None:
    token = issue_token(SECRET, "alice", Role.VIEWER)
    last = "A" if token[-2] != "A" else "B"
    unauthorized(token[:-2] + last + token[-1])


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        raw_token(claims(), algorithm="HS512"),  # only HS256 is accepted
        jwt.encode(claims(), None, algorithm="none"),
    ],
    ids=["empty", "garbage", "three parts", "HS512", "alg none"],
)
def test_malformed_tokens(token: str) -> None:
    unauthorized(token)


@pytest.mark.parametrize("missing", ["exp", "sub", "role", "iss"])
def test_missing_claim(missing: str) -> None:
    unauthorized(raw_token(claims(**{missing: None})))


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "someone_else"},
        {"role": "superuser"},
        {"role": "VIEWER"},
        {"role": 1},
        {"sub": "bad id"},
        {"sub": "a" * 65},
        {"sub": ""},
        {"sub": "u\n"},
        {"sub": "a" * 64 + "\n"},
        {"stream": 5},
        {"stream": "s1\n"},
        {"exp": "tomorrow"},
        # Named without its value, which is read from the clock: every xdist worker
        # must collect the same test ids.
        pytest.param({"iat": int(time.time()) + 3600}, id="iat=an hour ahead"),
    ],
    ids=lambda c: "-".join(f"{k}={v!r}"[:20] for k, v in c.items()),
)
def test_bad_claims(changes: dict[str, Any]) -> None:
    unauthorized(raw_token(claims(**changes)))


def test_only_a_true_adult_claim_counts() -> None:
    for value in ("true", 1, "yes", None):
        assert verify_token(SECRET, raw_token(claims(adult=value))).adult is False
    assert verify_token(SECRET, raw_token(claims(name=42))).name == "alice"


@pytest.mark.parametrize(
    ("role", "allowed", "ok"),
    [
        (Role.VIEWER, (Role.VIEWER,), True),
        (Role.STREAMER, (Role.VIEWER, Role.STREAMER), True),
        (Role.OVERLAY, (Role.VIEWER, Role.STREAMER), False),
        (Role.ADMIN, (Role.VIEWER,), False),
        (Role.VIEWER, (Role.STREAMER,), False),
    ],
)
def test_role_requirements(role: Role, allowed: tuple[Role, ...], ok: bool) -> None:
    who = Identity("alice", "Alice", role)
    if ok:
        who.require(*allowed)
        return
    with pytest.raises(GiftingError) as caught:
        who.require(*allowed)
    assert caught.value.code is ErrorCode.FORBIDDEN
    assert all(r.value in caught.value.message for r in allowed)


def test_roles_parse_from_their_names() -> None:
    assert [Role(r) for r in ("viewer", "streamer", "overlay", "admin")] == list(Role)
    with pytest.raises(ValueError):
        Role("owner")


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER  abc ", "abc")],
)
def test_bearer_header(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "abc", "Token x"])
def test_bad_bearer_header(header: str | None) -> None:
    with pytest.raises(GiftingError) as caught:
        bearer_token(header)
    assert caught.value.code is ErrorCode.UNAUTHORIZED


# --- webhook signatures --------------------------------------------------------------------

BODY = b'{"event_id":"e1","type":"payment.succeeded","user_id":"alice","package_id":"coins_100"}'
NOW = 1_700_000_000


def verify(header: str | None, body: bytes = BODY, now: float = NOW) -> None:
    verify_webhook(HOOK_SECRET, body, header, 300, now=now)


def test_signature_format_and_round_trip() -> None:
    header = sign_webhook(HOOK_SECRET, BODY, NOW)
    stamp, digest = header.split(",")
    assert stamp == f"t={NOW}" and digest.startswith("v1=") and len(digest) == 3 + 64
    verify(header)


@pytest.mark.parametrize("offset", [0, 1, 299, 300, -299, -300])
def test_timestamps_within_tolerance(offset: int) -> None:
    verify(sign_webhook(HOOK_SECRET, BODY, NOW + offset))


@pytest.mark.parametrize("offset", [301, -301, 10**6, -NOW])
def test_timestamps_beyond_tolerance(offset: int) -> None:
    with pytest.raises(GiftingError, match="more than 300s away") as caught:
        verify(sign_webhook(HOOK_SECRET, BODY, NOW + offset))
    assert caught.value.code is ErrorCode.INVALID_SIGNATURE


def test_fractional_now_is_measured_exactly() -> None:
    header = sign_webhook(HOOK_SECRET, BODY, NOW)
    verify(header, now=NOW + 300.0)
    with pytest.raises(GiftingError):
        verify(header, now=NOW + 300.001)


def test_header_parts_in_any_order_with_spaces_and_extra_schemes() -> None:
    digest = sign_webhook(HOOK_SECRET, BODY, NOW).split(",")[1]
    verify(f"{digest}, t={NOW}")
    verify(f"t={NOW},v0=deadbeef,{digest}")


def signature_error(header: str | None, body: bytes = BODY) -> GiftingError:
    with pytest.raises(GiftingError) as caught:
        verify(header, body)
    assert caught.value.code is ErrorCode.INVALID_SIGNATURE
    return caught.value


def test_every_byte_of_the_body_is_signed() -> None:
    header = sign_webhook(HOOK_SECRET, BODY, NOW)
    for i in range(len(BODY)):
        altered = BODY[:i] + bytes([BODY[i] ^ 1]) + BODY[i + 1 :]
        assert "does not match" in signature_error(header, altered).message
    assert "does not match" in signature_error(header, BODY + b" ").message


def test_wrong_secret_or_replayed_digest_with_a_new_timestamp() -> None:
    assert "does not match" in signature_error(sign_webhook("x" * 40, BODY, NOW)).message
    digest = sign_webhook(HOOK_SECRET, BODY, NOW - 10).split(",")[1]
    signature_error(f"t={NOW},{digest}")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"t={NOW}",
        "v1=00",
        "t=,v1=00",
        "t=abc,v1=00",
        "t=-5,v1=00",
        f"t={NOW}.0,v1=00",
        "t=1234567890123,v1=00",  # 13 digits
        f"t={NOW},v1=",
        f"t={NOW},v1={'0' * 64}",
        f"t={NOW},V1={'0' * 64}",
        "t=\u00b2,v1=00",  # str.isdigit() is true for a superscript two; int() is not
        "t=\u2460,v1=00",  # circled digit one
    ],
)
def test_malformed_or_wrong_headers(header: str | None) -> None:
    signature_error(header)
