"""The one benchmark event, ~350 bytes of JSON, carrying its publish time as ``@t=...``."""

from __future__ import annotations

import json
import time
from typing import Any

TITLE = "Benchmark story"
AUTHOR = {"handle": "bench"}
# Padding sized so that a livefeed envelope, and the peers' equivalent JSON, is ~350 bytes.
PAD = "lorem ipsum dolor sit amet " * 6


def body(now: float | None = None) -> str:
    """The story body: the publish timestamp first (probes read it), then padding."""
    return f"@t={time.time() if now is None else now:.6f} {PAD}"


def story(tool: str, seq: int, now: float | None = None) -> dict[str, Any]:
    """The event as the peers publish it: shaped like a livefeed envelope."""
    stamp = time.time() if now is None else now
    return {
        "type": "event",
        "tool": tool,
        "id": f"{int(stamp * 1000)}-{seq}",
        "kind": "story",
        "ts": round(stamp, 6),
        "data": {"author": AUTHOR, "title": f"{TITLE} {seq}", "body": body(stamp)},
    }


def story_text(tool: str, seq: int, now: float | None = None) -> str:
    return json.dumps(story(tool, seq, now), separators=(",", ":"))


if __name__ == "__main__":
    print(len(story_text("bench", 123).encode()), "bytes:", story_text("bench", 123))
