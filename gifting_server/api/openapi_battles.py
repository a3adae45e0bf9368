"""Live battles in the OpenAPI document (api/battles_http.py, docs/battles.md)."""

from __future__ import annotations

from gifting_server.api.openapi import (
    ID_SCHEMA,
    INT,
    KEY_SCHEMA,
    STR,
    Op,
    Schema,
    array,
    described,
    enum,
    integer,
    obj,
    param,
    ref,
)
from gifting_server.config import Settings
from gifting_server.ledger.battle_record import PUBLIC_STATUS, TOP
from gifting_server.ledger.battles import REASONS

STREAM_OR_NULL: Schema = {"type": ["string", "null"]}


def battle_operations(settings: Settings) -> list[Op]:
    battle = param("battle_id", "path", KEY_SCHEMA, "the battle (bt_<hex>.<inviting stream>)")
    idem = param("Idempotency-Key", "header", KEY_SCHEMA, "instead of `idempotency_key`")
    answers = [
        Op(
            "post",
            f"/v1/battles/{{battle_id}}/{action}",
            summary,
            200,
            ref("Battle"),
            ("streamer",),
            errors="unknown_battle battle_conflict",
            params=(battle,),
        )
        for action, summary in (
            (
                "accept",
                "The invited streamer accepts: the battle is live until `ends_at` (Redis's "
                "clock). Repeated: the battle as it stands. 409 `battle_conflict` when it "
                "was declined, cancelled or expired.",
            ),
            (
                "decline",
                "The invited streamer declines the invite. Repeated: the battle as it stands.",
            ),
            (
                "cancel",
                "Either streamer cancels the invite before the battle starts. Repeated: "
                "the battle as it stands; 409 `battle_conflict` once it started.",
            ),
        )
    ]
    return [
        Op(
            "post",
            "/v1/battles",
            "Invite another live stream to a battle (`battle_conflict`: either stream is "
            "not live or already in a battle, or both are yours). The same idempotency "
            "key answers the same battle (200 then).",
            201,
            ref("Battle"),
            ("streamer",),
            "BattleRequest",
            errors="unknown_stream battle_conflict idempotency_conflict",
            params=(idem,),
        ),
        Op(
            "get",
            "/v1/battles/{battle_id}",
            "A battle as it stands: the body of every `battle` event too.",
            200,
            ref("Battle"),
            errors="unknown_battle",
            params=(battle,),
        ),
        *answers,
    ]


def battle_schemas(settings: Settings) -> dict[str, Schema]:
    rules = settings.battles
    contributor = obj({"user_id": ID_SCHEMA, "name": STR, "coins": integer(1)})
    side = obj(
        {
            "stream_id": ID_SCHEMA,
            "streamer": obj({"id": STREAM_OR_NULL, "name": STREAM_OR_NULL}),
            "points": described(INT, "coins of the gifts counted for this side"),
            "top": described({**array(contributor), "maxItems": TOP}, "best first"),
        }
    )
    return {
        "BattleRequest": obj(
            {
                "stream_id": described(ID_SCHEMA, "your live stream"),
                "opponent_stream_id": described(ID_SCHEMA, "another streamer's live stream"),
                "duration_s": integer(rules.min_duration_s, rules.max_duration_s),
            },
            {"idempotency_key": KEY_SCHEMA},
        ),
        "Battle": obj(
            {
                "battle_id": STR,
                "status": enum(*sorted(set(PUBLIC_STATUS.values()))),
                "duration_s": integer(1),
                "created_at": described(INT, "unix ms"),
                "sides": {**array(side), "minItems": 2, "maxItems": 2},
            },
            {
                "expires_at": described(INT, "unix ms; while invited"),
                "ends_at": described(INT, "unix ms, by Redis's clock; once accepted"),
                "winner": described(STREAM_OR_NULL, "once ended: a stream id, null for a draw"),
                "reason": described(enum(*REASONS), "why it ended, or was declined or cancelled"),
            },
        ),
    }
