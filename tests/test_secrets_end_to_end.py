"""A provider that echoes the key (a 401 message, a 500 body), through both transports, against
an independent server: the key is in no byte of the store, its WAL, the exports, or the output.

Issue 11's check. The provider runs in its own process (tests/independent_provider.py) and
sees the real key; the run is a real ``abl-tui`` process with the key in its environment.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
from pathlib import Path

import pytest

from independent_provider import running_provider
from support import ABL, PROCESS_TIMEOUT, cli_env

CASES = [
    ("openai/gpt-4o-mini", "OPENAI_API_KEY", "native"),
    ("openai/gpt-4o-mini", "OPENAI_API_KEY", "litellm"),
    ("anthropic/claude-haiku-4-5", "ANTHROPIC_API_KEY", "native"),
]


def _abl(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*ABL, *args],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=PROCESS_TIMEOUT,
    )


def _pieces(key: str) -> list[bytes]:
    """The key and long pieces of it: a partial echo must not survive either."""
    return [key.encode(), key[-20:].encode(), key[8:28].encode()]


@pytest.mark.parametrize(("model", "variable", "transport"), CASES)
def test_an_echoed_key_reaches_no_file_and_no_output(
    tmp_path: Path, model: str, variable: str, transport: str
) -> None:
    key = "sk-live-" + secrets.token_hex(20)
    env = cli_env(**{variable: key})
    items = tmp_path / "items.jsonl"
    markers = ["ECHO401", "ECHO500", "fine"]
    items.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "prompt": f"item {i} {markers[i % 3]}"}) + "\n"
            for i in range(9)
        )
    )
    db = tmp_path / "runs.db"
    with running_provider(tmp_path) as provider:
        base = provider.anthropic_base if model.startswith("anthropic/") else provider.openai_base
        run = _abl(
            tmp_path, env, "run", str(items), "--db", str(db), "--headless", "--yes",
            "--model", model, "--api-base", base, "--transport", transport,
            "--max-attempts", "2", "--workers", "4",
        )  # fmt: skip
        exports = [
            _abl(tmp_path, env, "export", "latest", "--db", str(db), "--format", fmt,
                 "--output", str(tmp_path / f"export.{fmt}"))
            for fmt in ("jsonl", "csv")
        ]  # fmt: skip
        listing = _abl(tmp_path, env, "runs", "--db", str(db), "--format", "json")
        ledger = provider.ledger()

    assert run.returncode == 1, run.stderr.decode()
    # The provider really was sent the key and echoed it: else this test proves nothing.
    assert sum(r["status"] == 401 for r in ledger) == 3
    assert sum(r["status"] == 500 for r in ledger) == 6  # retried once each
    with sqlite3.connect(db) as conn:
        failed = conn.execute("SELECT count(*) FROM items WHERE status = 'failed'").fetchone()
    assert failed == (6,)
    blobs = {
        "store": db.read_bytes(),
        "wal": db.with_name(db.name + "-wal").read_bytes()
        if db.with_name(db.name + "-wal").exists()
        else b"",
        "export.jsonl": (tmp_path / "export.jsonl").read_bytes(),
        "export.csv": (tmp_path / "export.csv").read_bytes(),
        "run output": run.stdout + run.stderr,
        "export output": b"".join(e.stdout + e.stderr for e in exports),
        "runs output": listing.stdout + listing.stderr,
    }
    assert b"s0" in blobs["export.jsonl"]  # the exports hold the failed items
    for where, blob in blobs.items():
        for piece in _pieces(key):
            assert piece not in blob, f"the key is in the {where}"
