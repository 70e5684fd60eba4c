"""The floor peer: ``floor_server.c``, built by benchmarks/setup into benchmarks/.venv."""

from pathlib import Path

SOURCE = Path(__file__).with_name("floor_server.c")
BINARY = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "floor_server"
