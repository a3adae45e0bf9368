"""config/ loads; every bad setting fails at load with a ConfigError naming the file or key."""

from __future__ import annotations

import dataclasses
import shutil
import stat
from pathlib import Path

import pytest
import redis

from gifting_server.config import (
    DEFAULT_CONFIG_DIR,
    MAX_INT,
    RANGES,
    TEN_YEARS_S,
    ConfigError,
    Economy,
    History,
    Http,
    Limits,
    RedisOptions,
    Settings,
    WebSocket,
    load_settings,
)

SECRETS = {"GIFTING_SECRET": "s" * 32, "GIFTING_WEBHOOK_SECRET": "w" * 32}


def load(tmp_path: Path, overlay: str | None = None, **env: str) -> Settings:
    """Settings from the real config/, with `overlay` as the GIFTING_CONFIG file."""
    values = {"GIFTING_DATA_DIR": str(tmp_path / "data"), **SECRETS, **env}
    if overlay is not None:
        path = tmp_path / "overlay.toml"
        path.write_text(overlay)
        values["GIFTING_CONFIG"] = str(path)
    return load_settings(values)


def test_the_shipped_config_loads(tmp_path: Path) -> None:
    settings = load(tmp_path, GIFTING_REDIS_URL="redis://127.0.0.1:1/0")
    assert settings.redis_url == "redis://127.0.0.1:1/0"
    assert settings.data_dir == (tmp_path / "data").resolve()
    assert settings.secret == "s" * 32 and settings.webhook_secret == "w" * 32
    rose, package = settings.gift("rose"), settings.package("coins_100")
    assert rose is not None and (rose.name, rose.coins, rose.tier) == ("Rose", 1, 1)
    assert package is not None and (package.coins, package.price) == (100, 129)
    assert settings.gift("nope") is None and settings.package("nope") is None
    assert len({g.id for g in settings.gifts}) == len(settings.gifts) > 1
    assert settings.economy.creator_share_bps == 5000
    assert settings.limits.max_gift_count == 99
    assert settings.limits.request_timeout_s == 2.0
    assert settings.history.max_events == 1000
    assert settings.metrics_public is True
    assert settings.redis == RedisOptions(replicas_acked=0, replicas_timeout_ms=1000)


def test_replica_acknowledgement_is_set_in_the_redis_section(tmp_path: Path) -> None:
    settings = load(tmp_path, "[redis]\nreplicas_acked = 2\nreplicas_timeout_ms = 250\n")
    assert settings.redis == RedisOptions(replicas_acked=2, replicas_timeout_ms=250)


def test_overlay_changes_only_its_keys(tmp_path: Path) -> None:
    settings = load(tmp_path, "[limits]\nmax_gift_count = 10\nrequest_timeout_s = 3\n")
    assert settings.limits.max_gift_count == 10
    assert settings.limits.request_timeout_s == 3.0  # an int is fine where a float is expected
    assert settings.limits.gift_burst == 40  # from default.toml
    assert settings.economy.creator_share_bps == 5000


def test_without_secrets_they_are_generated_once_and_kept(tmp_path: Path) -> None:
    env = {"GIFTING_DATA_DIR": str(tmp_path / "data")}
    first, second = load_settings(env), load_settings(env)
    assert len(first.secret) >= 32 and first.secret != first.webhook_secret
    assert (first.secret, first.webhook_secret) == (second.secret, second.webhook_secret)
    mode = (tmp_path / "data" / "token-secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


@pytest.mark.parametrize("name", ["GIFTING_SECRET", "GIFTING_WEBHOOK_SECRET"])
def test_short_secret(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be at least 32 characters"):
        load(tmp_path, **{name: "short"})


def test_missing_overlay_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"config file not found: {missing}"):
        load_settings({**SECRETS, "GIFTING_CONFIG": str(missing)})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"overlay\.toml: invalid TOML"):
        load(tmp_path, "[economy\n")


SECTION_ERRORS = {
    "not a table": ("economy = 5", r"\[economy\] must be a table"),
    "unknown key": ("[limits]\nmax_gifts = 3", r"\[limits\] unknown key 'max_gifts'"),
    "string for int": ("[economy]\nholding_period_days = '7'", r"holding_period_days must be int"),
    "float for int": ("[limits]\nmax_gift_count = 9.5", r"max_gift_count must be int"),
    "bool for int": ("[limits]\ngift_burst = true", r"gift_burst must be int"),
    "int for bool": ("[limits]\nrequire_age_verification = 1", r"require_age_verification"),
    "int for str": ("[economy]\ncurrency = 840", r"\[economy\] currency must be str"),
    "negative": ("[economy]\ncashout_min_diamonds = -2", r"cashout_min_diamonds must be in 0\.\."),
    "negative float": ("[limits]\nrequest_timeout_s = -1.0", r"request_timeout_s must be in"),
    "share zero": ("[economy]\ncreator_share_bps = 0", r"creator_share_bps must be in 1..10000"),
    "share over": ("[economy]\ncreator_share_bps = 10001", r"creator_share_bps must be in"),
    "diamonds per unit": ("[economy]\ndiamonds_per_unit = 0", r"diamonds_per_unit must be in 1"),
    "cents per unit": ("[economy]\ncents_per_unit = 0", r"cents_per_unit must be in 1\.\."),
    "minimum not whole": ("[economy]\ncashout_min_diamonds = 2001", r"multiple of diamonds_per"),
    "gift count": ("[limits]\nmax_gift_count = 0", r"\[limits\] max_gift_count must be in 1"),
    "burst": ("[limits]\ngift_burst = 0", r"\[limits\] gift_burst must be in 1\.\."),
    "rate": ("[limits]\ngift_rate_per_s = 0", r"gift_rate_per_s must be in 1\.\."),
    "timeout": ("[limits]\nrequest_timeout_s = 0", r"request_timeout_s must be in 0\.001\.\."),
    "timeout nan": ("[limits]\nrequest_timeout_s = nan", r"request_timeout_s must be in 0\.001"),
    "timeout inf": ("[limits]\nrequest_timeout_s = inf", r"request_timeout_s must be in 0\.001"),
    "history": ("[history]\nmax_events = 0", r"\[history\] max_events must be in 1\.\."),
    "server not a table": ("server = 5", r"\[server\] must be a table"),
    "metrics_public not a bool": ("[server]\nmetrics_public = 'no'", r"metrics_public"),
    "server unknown key": ("[server]\nmetrics = false", r"\[server\] unknown key 'metrics'"),
    "replicas not an int": (
        "[redis]\nreplicas_acked = '1'",
        r"\[redis\] replicas_acked must be int",
    ),
    "replicas negative": ("[redis]\nreplicas_acked = -1", r"\[redis\] replicas_acked must be in 0"),
    "wait forever": ("[redis]\nreplicas_timeout_ms = 0", r"replicas_timeout_ms must be in 1\.\."),
    "redis unknown key": ("[redis]\nreplicas = 1", r"\[redis\] unknown key 'replicas'"),
}


@pytest.mark.parametrize("name", list(SECTION_ERRORS))
def test_bad_setting_is_refused_naming_the_key(tmp_path: Path, name: str) -> None:
    overlay, message = SECTION_ERRORS[name]
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, overlay)


def config_dir_with(tmp_path: Path, file: str, text: str) -> Path:
    """A copy of config/ whose `file` is replaced by `text`."""
    target = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    (target / file).write_text(text)
    return target


def toml_entry(table: str, entry: dict[str, object]) -> str:
    """One [[table]] entry; a None value leaves the key out."""
    lines = [f"[[{table}]]"]
    for key, value in entry.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f"{key} = {value!r}")
        elif value is not None:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def gift(**fields: object) -> str:
    return toml_entry(
        "gifts", {"id": "rose", "name": "Rose", "coins": 1, "tier": 1, "emoji": "R", **fields}
    )


def package(**fields: object) -> str:
    return toml_entry("packages", {"id": "coins_100", "coins": 100, "price": 129, **fields})


# A TOML basic string, so that "\n" is a real newline (toml_entry writes literal strings).
NEWLINE_GIFT = '[[gifts]]\nid = "rose\\n"\nname = "Rose"\ncoins = 1\ntier = 1\nemoji = "R"\n'

CATALOG_ERRORS = {
    "no gifts": ("gifts.toml", "", r"gifts\.toml: the catalog needs at least one"),
    "gift id missing": ("gifts.toml", gift(id=None), r"gifts\.toml \[\[gifts\]\] #1: id None"),
    "gift id chars": ("gifts.toml", gift(id="ro se"), r"#1: id 'ro se' must be 1-64 ASCII"),
    "gift id unicode": ("gifts.toml", gift(id="rosé"), r"#1: id 'rosé' must be 1-64 ASCII"),
    "gift id newline": ("gifts.toml", NEWLINE_GIFT, r"#1: id 'rose\\n' must be 1-64 ASCII"),
    "gift id long": ("gifts.toml", gift(id="r" * 65), r"#1: id 'r+' must be 1-64 ASCII"),
    "gift id int": ("gifts.toml", gift(id=5), r"gifts\.toml \[\[gifts\]\] #1: id 5 must"),
    "gift name": ("gifts.toml", gift(name=""), r"#1 \(rose\): name must be a non-empty"),
    "gift coins zero": ("gifts.toml", gift(coins=0), r"#1: coins must be a positive integer"),
    "gift coins float": ("gifts.toml", gift(coins=1.5), r"#1: coins must be a positive integer"),
    "gift coins bool": ("gifts.toml", gift(coins=True), r"#1: coins must be a positive integer"),
    # Redis refuses 1e+17 in the gift script after its first write; 2^53 stops being exact
    "gift coins 1e17": ("gifts.toml", gift(coins=10**17), r"#1: coins must be in 1\.\.9007199"),
    "gift coins x max count": (
        "gifts.toml",
        gift(coins=(2**53 - 1) // 99 + 1),
        r"gifts\.toml: gift 'rose': coins x \[limits\] max_gift_count must be at most",
    ),
    "gift tier zero": ("gifts.toml", gift(tier=0), r"#1: tier must be a positive integer"),
    "gift tier five": ("gifts.toml", gift(tier=5), r"#1 \(rose\): tier must be 1..4"),
    "gift no picture": ("gifts.toml", gift(emoji=None), r"#1 \(rose\): needs an emoji or"),
    "gift twice": ("gifts.toml", gift() + gift(), r"gifts\.toml: gift id 'rose' appears twice"),
    "second gift": ("gifts.toml", gift() + gift(id="x", coins=-1), r"\[\[gifts\]\] #2: coins"),
    "gift not a table": ("gifts.toml", "gifts = [1]", r"gifts\.toml \[\[gifts\]\] #1"),
    "no packages": ("packages.toml", "", r"packages\.toml: needs at least one"),
    "package id": ("packages.toml", package(id="a/b"), r"packages\.toml \[\[packages\]\] #1"),
    "package coins": ("packages.toml", package(coins=0), r"#1: coins must be a positive"),
    "package coins 1e17": ("packages.toml", package(coins=10**17), r"#1: coins must be in 1\.\."),
    "package price 2^63": ("packages.toml", package(price=2**63 - 1), r"#1: price must be in 1\."),
    "package price": ("packages.toml", package(price=-5), r"#1: price must be a positive .* -5"),
    "package twice": ("packages.toml", package() * 2, r"package id 'coins_100' appears twice"),
    "package not a table": ("packages.toml", "packages = ['x']", r"packages\.toml \[\[packages"),
}


@pytest.mark.parametrize("name", list(CATALOG_ERRORS))
def test_bad_catalog_entry_is_refused_naming_file_and_entry(tmp_path: Path, name: str) -> None:
    file, text, message = CATALOG_ERRORS[name]
    config_dir = config_dir_with(tmp_path, file, text)
    with pytest.raises(ConfigError, match=message):
        load_settings({**SECRETS, "GIFTING_DATA_DIR": str(tmp_path / "data")}, config_dir)


def test_config_dir_from_the_environment(tmp_path: Path) -> None:
    config_dir = config_dir_with(tmp_path, "packages.toml", package(price=99))
    env = {**SECRETS, "GIFTING_DATA_DIR": str(tmp_path), "GIFTING_CONFIG_DIR": str(config_dir)}
    assert [(p.id, p.price) for p in load_settings(env).packages] == [("coins_100", 99)]


def test_error_from_the_overlay_names_the_overlay_file(tmp_path: Path) -> None:
    """An operator's GIFTING_CONFIG replaces the package list; the error must point there,
    not at config/packages.toml, which holds nothing wrong."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, package(price=-5))
    assert "overlay.toml" in str(caught.value)


@pytest.mark.parametrize("ttl", [0, -1, 10**18, TEN_YEARS_S + 1])
def test_an_idempotency_ttl_redis_would_refuse_is_refused_naming_key_file_and_range(
    tmp_path: Path, ttl: int
) -> None:
    """0 or an absurd TTL used to load, and every gift then failed with a 500 at the final
    `SET ... PX`, after its money had moved."""
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, f"[limits]\nidempotency_ttl_s = {ttl}\n")
    overlay = tmp_path / "overlay.toml"
    expected = f"[limits] idempotency_ttl_s must be in 1..{TEN_YEARS_S}, got {ttl} (in {overlay})"
    assert str(refused.value) == expected


NUMERIC_SECTIONS = {
    "economy": Economy,
    "limits": Limits,
    "history": History,
    "websocket": WebSocket,
    "http": Http,
    "redis": RedisOptions,
}


def numeric_fields() -> list[tuple[str, str]]:
    return [
        (section, f.name)
        for section, cls in NUMERIC_SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f.type in ("int", "float")
    ]


@pytest.mark.parametrize(("section", "key"), numeric_fields())
def test_every_numeric_setting_has_a_range_that_holds_its_default(section: str, key: str) -> None:
    assert key in RANGES[section], f"[{section}] {key} has no entry in config.RANGES"
    low, high = RANGES[section][key]
    assert low <= getattr(NUMERIC_SECTIONS[section](), key) <= high
    assert high <= MAX_INT


@pytest.mark.parametrize(("section", "key"), numeric_fields())
def test_every_numeric_setting_just_outside_its_range_is_refused(
    tmp_path: Path, section: str, key: str
) -> None:
    low, high = RANGES[section][key]
    if isinstance(low, float):
        outside: list[float] = [low / 2, high * 2]
    else:
        outside = [low - 1, int(high) + 1]
    for value in outside:
        with pytest.raises(ConfigError) as refused:
            load(tmp_path, f"[{section}]\n{key} = {value!r}\n")
        message = str(refused.value)
        assert message.startswith(f"[{section}] {key} must be in {low}..{high}, got {value!r}")
        assert message.endswith(f"(in {tmp_path / 'overlay.toml'})")


def test_a_default_toml_value_out_of_range_names_default_toml(tmp_path: Path) -> None:
    text = (DEFAULT_CONFIG_DIR / "default.toml").read_text()
    config_dir = config_dir_with(
        tmp_path, "default.toml", text.replace("max_events = 1000", "max_events = 0")
    )
    with pytest.raises(ConfigError, match=r"max_events must be in 1\.\.10000000, got 0 \(in .*"):
        load_settings({**SECRETS, "GIFTING_DATA_DIR": str(tmp_path / "data")}, config_dir)
    with pytest.raises(ConfigError) as refused:
        load_settings({**SECRETS, "GIFTING_DATA_DIR": str(tmp_path / "data")}, config_dir)
    assert str(config_dir / "default.toml") in str(refused.value)


def test_the_longest_idempotency_ttl_is_one_redis_takes(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        high = RANGES["limits"]["idempotency_ttl_s"][1]
        assert client.set("k", "v", px=int(high) * 1000)
        assert client.pttl("k") > (high - 60) * 1000
    finally:
        client.close()


def test_the_readme_lists_every_range() -> None:
    readme = (DEFAULT_CONFIG_DIR.parent / "README.md").read_text()
    for section, keys in RANGES.items():
        for key, (low, high) in keys.items():
            assert f"| `[{section}] {key}` | {low}..{high} |" in readme, (section, key)
