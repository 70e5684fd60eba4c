from __future__ import annotations

import pytest

from livefeed import cli
from livefeed.config import SETTINGS, ConfigError, Settings


def test_defaults_follow_the_contract():
    settings = Settings.from_env({})
    assert settings.redis_url is None
    assert settings.history_size == 1000 and settings.max_frame_bytes == 4096
    assert settings.max_subscriptions == 100
    assert (settings.frame_rate, settings.frame_burst) == (20, 40)
    assert (settings.outbox_frames, settings.outbox_bytes) == (1000, 4 * 1024 * 1024)
    assert settings.max_body_bytes == 1024 * 1024 and settings.max_batch == 1000
    assert settings.idempotency_ttl == 600  # "a repeated idempotency_key within 10 minutes"


def test_environment_names_and_flags():
    env = {
        "REDIS_URL": "redis://a",
        "PORT": "9000",
        "LIVEFEED_PUBLISH_KEYS": "k1, k2,",
        "LIVEFEED_PRIVATE_TOOLS": "flask",
        "LIVEFEED_SECRET": "s" * 32,
        "LIVEFEED_ALLOWED_ORIGINS": "https://a.example,https://b.example",
        "LIVEFEED_DEMO": "yes",
    }
    settings = Settings.from_env(env, port=9100)
    assert settings.redis_url == "redis://a" and settings.port == 9100
    assert settings.publish_keys == ("k1", "k2")
    assert settings.private_tools == frozenset({"flask"})
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.demo is True
    assert (
        Settings.from_env({"LIVEFEED_REDIS_URL": "redis://b", "REDIS_URL": "redis://a"}).redis_url
        == "redis://b"
    )


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LIVEFEED_HISTORY_SIZE": "0"}, "LIVEFEED_HISTORY_SIZE"),
        ({"LIVEFEED_HISTORY_SIZE": "lots"}, "LIVEFEED_HISTORY_SIZE"),
        ({"PORT": "http"}, "PORT"),
        ({"LIVEFEED_PRIVATE_TOOLS": "Flask"}, "LIVEFEED_PRIVATE_TOOLS"),
        ({"LIVEFEED_PRIVATE_TOOLS": "flask"}, "LIVEFEED_SECRET"),
        ({"LIVEFEED_DEMO": "maybe"}, "LIVEFEED_DEMO"),
        ({"LIVEFEED_SSE_KEEPALIVE": "60"}, "LIVEFEED_SSE_KEEPALIVE"),
        ({"PORT": "70000"}, "PORT"),
        ({"LIVEFEED_PORT": "-5"}, "LIVEFEED_PORT"),
        ({"LIVEFEED_LOG_LEVEL": "verbose"}, "LIVEFEED_LOG_LEVEL"),
        ({"LIVEFEED_REDIS_URL": "foo://bar"}, "LIVEFEED_REDIS_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://localhost:abc"}, "REDIS_URL"),
        ({"LIVEFEED_HEARTBEAT": "inf"}, "LIVEFEED_HEARTBEAT"),
        ({"LIVEFEED_HEARTBEAT": "1e300"}, "LIVEFEED_HEARTBEAT"),
        ({"LIVEFEED_FRAME_RATE": "inf"}, "LIVEFEED_FRAME_RATE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert names in str(caught.value)


def test_every_redis_url_and_log_level_the_server_takes_is_accepted():
    for url in ["redis://h:1/2", "REDIS://h", "rediss://h", "unix:///r.sock", "unix:/r.sock"]:
        assert Settings.from_env({"REDIS_URL": url}).redis_url == url
    for level in ["debug", "INFO", "warn", "Warning", "fatal"]:
        assert Settings.from_env({"LIVEFEED_LOG_LEVEL": level}).log_level == level.lower()


def test_every_setting_maps_to_a_field():
    fields = set(Settings.__dataclass_fields__)
    assert {s.field for s in SETTINGS} <= fields


def test_a_short_secret_is_refused():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"LIVEFEED_SECRET": "short"})
    assert "32 bytes" in str(caught.value)


@pytest.mark.parametrize(
    ("flags", "environment", "demo"),
    [
        ((), "1", True),
        (("--no-demo",), "1", False),
        (("--demo",), "0", True),
    ],
)
def test_a_switch_flag_beats_the_environment_either_way(
    flags: tuple[str, ...], environment: str, demo: bool
):
    args = cli.parser().parse_args(["serve", *flags])
    settings = Settings.from_env({"LIVEFEED_DEMO": environment}, **cli.serve_overrides(args))
    assert settings.demo is demo
