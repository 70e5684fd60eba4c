"""The documentation keeps up with the code: every setting and close code is described."""

from __future__ import annotations

from pathlib import Path

import pytest

from livefeed.config import SETTINGS
from livefeed.protocol import CloseCode, ErrorCode

DOCS = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("document", ["README.md", "docs/operations.md"])
def test_every_setting_is_documented(document: str):
    text = (DOCS / document).read_text()
    for setting in SETTINGS:
        assert setting.env[0] in text, f"{setting.env[0]} missing from {document}"
        assert "--" + setting.field.replace("_", "-") in text


@pytest.mark.parametrize("document", ["docs/protocol.md", "docs/operations.md"])
def test_every_close_code_is_documented(document: str):
    text = (DOCS / document).read_text()
    for code in CloseCode:
        assert f"| {int(code)} |" in text, f"close code {int(code)} missing from {document}"


def test_every_error_code_is_documented():
    text = (DOCS / "docs/protocol.md").read_text() + (DOCS / "README.md").read_text()
    contract = {
        "bad_frame",
        "unknown_type",
        "invalid_tool",
        "forbidden",
        "too_many_subscriptions",
        "rate_limited",
        "unauthorized",
    }
    assert {code.value for code in ErrorCode} == contract
    for code in (
        "bad_json",
        "unauthorized",
        "too_large",
        "invalid_event",
        "rate_limited",
        "unavailable",
        "invalid_query",
    ):
        assert f"`{code}`" in text
