"""Issue 11's concurrent resumes, checked from an independent provider's ledger: a run killed
mid-way, then ``abl-tui resume latest`` twice at once: one resumes, the other is refused
(exit 75); no committed item is sent again and no item is paid twice except the calls that
were under way or answered but not yet committed when the first process died (at most the
worker count plus half as many)."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from pathlib import Path

from independent_provider import running_provider
from support import PROCESS_TIMEOUT, start_abl, wait_until

WORKERS = 16


def _succeeded_prompts(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with contextlib.suppress(sqlite3.Error):
        uri = f"{db.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=0.05)) as conn:
            rows = conn.execute("SELECT prompt FROM items WHERE status = 'succeeded'")
            return {prompt for (prompt,) in rows}
    return set()


def test_two_resumes_at_once_pay_nothing_twice(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    prompts = [f"resume item {n}" for n in range(300)]
    items.write_text(
        "".join(json.dumps({"id": f"r{n}", "prompt": p}) + "\n" for n, p in enumerate(prompts))
    )
    db = tmp_path / "runs.db"
    with running_provider(tmp_path, latency=0.1) as provider:
        first = start_abl(
            tmp_path, "run", str(items), "--db", str(db), "--headless", "--yes",
            "--model", "openai/gpt-4o-mini", "--api-base", provider.openai_base,
            "--workers", str(WORKERS),
        )  # fmt: skip
        wait_until(first, lambda: len(_succeeded_prompts(db)) >= 60, "60 items stored")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=PROCESS_TIMEOUT)
        committed = _succeeded_prompts(db)
        resumes = [
            start_abl(tmp_path, "resume", "latest", "--db", str(db), "--headless") for _ in range(2)
        ]
        outputs = [r.communicate(timeout=PROCESS_TIMEOUT) for r in resumes]
        paid = provider.paid()

    codes = sorted(r.returncode for r in resumes)
    # one resumes; the other is refused while it runs (or, started late, finds nothing left)
    assert codes in ([0, 75], [0, 0]), outputs
    if codes == [0, 75]:
        assert "being run by another process" in "".join(err for _, err in outputs)
    assert _succeeded_prompts(db) == set(prompts)
    assert set(paid) == set(prompts)
    assert not [p for p in committed if paid[p] > 1], "a committed item was sent again"
    twice = [p for p, n in paid.items() if n > 1]
    assert max(paid.values()) <= 2
    # Paid twice: the calls under way when the first process was killed (at most WORKERS)
    # and answers it had not committed yet, which back-pressure bounds at WORKERS // 2
    # (the README's "workers plus half as many").
    assert len(twice) <= WORKERS + WORKERS // 2, f"{len(twice)} items paid twice"
