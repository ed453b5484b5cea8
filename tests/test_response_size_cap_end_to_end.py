"""Issue 11 point 6: an answer above the size cap fails its item clearly instead of being held
in memory and stored whole. Against an independent provider answering 20 MiB of text (the
issue asks for a configurable cap of "a few MB" by default); through both transports."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from independent_provider import running_provider
from support import ABL, PROCESS_TIMEOUT, cli_env


@pytest.mark.xfail(
    strict=True,
    reason="bug: no answer size cap: NativeClient.post reads the whole body "
    "(response.read()), the litellm path keeps it too, and the store writes it: a 50 MiB "
    "answer succeeded, stored whole (51 MB store), 496 MB peak RSS native, 716 MB litellm",
)
@pytest.mark.parametrize("transport", ["native", "litellm"])
def test_an_answer_above_the_cap_fails_and_is_not_stored(tmp_path: Path, transport: str) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(
        json.dumps({"id": "huge", "prompt": "please HUGE=20"})
        + "\n"
        + json.dumps({"id": "small", "prompt": "please"})
        + "\n"
    )
    db = tmp_path / "runs.db"
    with running_provider(tmp_path) as provider:
        run = subprocess.run(
            [*ABL, "run", str(items), "--db", str(db), "--headless", "--yes",
             "--model", "openai/gpt-4o-mini", "--api-base", provider.openai_base,
             "--transport", transport, "--max-attempts", "1"],
            cwd=tmp_path, env=cli_env(OPENAI_API_KEY="sk-test"), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=PROCESS_TIMEOUT,
        )  # fmt: skip
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT item_id, status || ':' || ifnull(error, '') FROM items"))
    assert rows["small"].startswith("succeeded")
    assert rows["huge"].startswith("failed:") and len(rows["huge"]) > len("failed:"), rows["huge"]
    assert db.stat().st_size < 4 * 1024 * 1024
    assert run.returncode == 1
