"""Shared bits of the command-line clients: where to connect and with which token.

A tool's `main` is its edge: it reads the settings (only when it has to mint a
token) and hands them here."""

from __future__ import annotations

import argparse
from urllib.parse import urlencode

from gifting_server.auth import Role, issue_token
from gifting_server.config import Settings


def add_connection_arguments(parser: argparse.ArgumentParser, default_user: str) -> None:
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1/ws", help="the hub's URL")
    parser.add_argument(
        "--token",
        help="a token (default: one minted with this machine's GIFTING_SECRET or data dir)",
    )
    parser.add_argument("--user", default=default_user, help="user id of a minted token")
    parser.add_argument("--msgpack", action="store_true", help="speak gifting.v1.msgpack")


def settings_needed(args: argparse.Namespace) -> bool:
    """Whether a token has to be minted with this machine's secret."""
    return not args.token


def token_for(args: argparse.Namespace, role: Role, settings: Settings | None) -> str:
    if args.token:
        return str(args.token)
    assert settings is not None, "minting a token needs the settings"
    return issue_token(settings.secret, args.user, role, name=args.user.title(), adult=True)


def hub_url(args: argparse.Namespace, role: Role, settings: Settings | None) -> str:
    return f"{args.url}?{urlencode({'token': token_for(args, role, settings)})}"
