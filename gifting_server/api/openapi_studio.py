"""The streamer's endpoints in the OpenAPI document (api/studio.py): alert control,
the goal and the message settings, with their bodies' limits from the settings."""

from __future__ import annotations

from gifting_server.api.openapi import (
    ID_SCHEMA,
    INT,
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
from gifting_server.ledger.alerts import ACTIONS
from gifting_server.ledger.goal import MAX_TITLE

BOOL: Schema = {"type": "boolean"}


def studio_operations(settings: Settings, stream: Schema) -> list[Op]:
    return [
        Op(
            "post",
            "/v1/streams/{stream_id}/alerts",
            "Control the alerts of every open alerts overlay of your stream: one `alerts` "
            "event (a `gift` event marked `test` for a test alert, which moves no money).",
            200,
            ref("AlertsAnswer"),
            ("streamer",),
            "AlertsRequest",
            errors="unknown_stream unknown_event unknown_gift",
            params=(stream,),
        ),
        Op(
            "put",
            "/v1/streams/{stream_id}/goal",
            "Set your stream's goal; it keeps counting unless `reset` (a `goal` event).",
            200,
            ref("Goal"),
            ("streamer",),
            "GoalRequest",
            errors="unknown_stream",
            params=(stream,),
        ),
        Op(
            "put",
            "/v1/streams/{stream_id}/settings",
            "Change some of your stream's message settings; answers all of them.",
            200,
            ref("StreamSettings"),
            ("streamer",),
            "SettingsRequest",
            errors="unknown_stream",
            params=(stream,),
        ),
        Op(
            "get",
            "/v1/streams/{stream_id}/settings",
            "A stream's message settings: all of them for its streamer's token, all but "
            "`blocked_words` for anyone else.",
            200,
            ref("StreamSettings"),
            errors="unknown_stream invalid_request",
            params=(stream,),
        ),
        Op(
            "get",
            "/v1/streams/{stream_id}/speech/{event_id}",
            "A gift's message read aloud (WAV, rendered by the server's espeak-ng) for the "
            "alerts overlay: when the stream's `tts` setting is on and the send (count x "
            "gift coins) is worth `tts_min_coins`. 403 `speech_not_allowed` otherwise; 404 "
            "`unknown_event` for no gift with a message under that id in the stream's "
            "history; 503 `service_unavailable` when espeak-ng is not installed.",
            200,
            {"type": "string", "contentMediaType": "audio/wav"},
            ("overlay", "streamer"),
            errors="speech_not_allowed unknown_event unknown_stream token_revoked invalid_request",
            params=(stream, param("event_id", "path", integer(1), "the gift event")),
            media_type="audio/wav",
        ),
        Op(
            "get",
            "/v1/cashouts/rules",
            "The rules a cash-out is held to ([economy] of the server's config): the "
            "minimum, the daily cap, the holding period and what diamonds are worth.",
            200,
            ref("CashoutRules"),
        ),
    ]


def studio_schemas(settings: Settings) -> dict[str, Schema]:
    messages, limits = settings.messages, settings.limits
    return {
        "AlertsRequest": obj(
            {"action": enum(*ACTIONS)},
            {
                "event_id": described(integer(1), "replay: the gift event to show again"),
                "gift_id": described(ID_SCHEMA, "test: a gift of the catalog"),
                "count": described(integer(1, limits.max_gift_count, default=1), "test: how many"),
            },
        ),
        "AlertsAnswer": obj(
            {
                "stream_id": ID_SCHEMA,
                "action": enum(*ACTIONS),
                "event_id": described(integer(1), "the event the action emitted"),
            }
        ),
        "GoalRequest": obj(
            {"target": integer(1)},
            {
                "title": {"type": "string", "maxLength": MAX_TITLE, "default": ""},
                "reset": {**BOOL, "default": False},
            },
        ),
        "Goal": obj(
            {
                "target": integer(1),
                "progress": INT,
                "title": STR,
                "counted_from": described(INT, "the stream's coins_total when it began"),
            }
        ),
        "SettingsRequest": obj(
            {
                "messages": obj(
                    {},
                    {
                        "enabled": BOOL,
                        "min_coins": INT,
                        "max_length": integer(1, messages.max_length_limit),
                        "blocked_words": {
                            **array(
                                {"type": "string", "maxLength": messages.max_blocked_word_length}
                            ),
                            "maxItems": messages.max_blocked_words,
                        },
                        "tts": BOOL,
                        "tts_min_coins": INT,
                    },
                )
            }
        ),
        "StreamSettings": obj(
            {
                "stream_id": ID_SCHEMA,
                "messages": obj(
                    {
                        "enabled": BOOL,
                        "min_coins": INT,
                        "max_length": integer(1),
                        "tts": BOOL,
                        "tts_min_coins": INT,
                    },
                    {"blocked_words": array(STR)},
                ),
            }
        ),
        "CashoutRules": obj(
            {
                "min_diamonds": INT,
                "daily_cap": described(ref("Money"), "per streamer per UTC day"),
                "holding_period_days": described(INT, "diamonds are held this long once earned"),
                "diamonds_per_unit": described(INT, "a cash-out is a multiple of this"),
                "unit_value": described(ref("Money"), "what diamonds_per_unit diamonds are worth"),
            }
        ),
        "StreamGoal": {
            "type": ["object", "null"],
            "properties": {
                "target": integer(1),
                "title": STR,
                "counted_from": INT,
                "progress": INT,
            },
        },
    }
