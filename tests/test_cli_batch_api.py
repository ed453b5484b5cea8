"""``abl-tui run --batch-api`` end to end: a real ``abl-tui`` process, real HTTP to the loopback
simulator's batch endpoints, a real SQLite store. The simulator's two ledgers tell what went
through a batch and what went online: every item submitted to a batch once, online calls only
for the rescues, no second batch after a SIGKILL and a resume, and the batch price."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from async_batch_llm.simulator import ProviderSimulator
from async_batch_llm.simulator.batches import BatchSimSettings
from async_batch_llm.store.provider_batches import read_chunks
from support import cli_env

ABL = [sys.executable, "-m", "abl_tui.cli"]
MODEL = "openai/gpt-4o-mini"
PROCESS_TIMEOUT = 120.0  # a safety net for a hung process, not a speed bound
POLL = "0.05"  # seconds between the client's looks at a batch


class FrozenClock:
    """The simulator's clock: its batches make no progress until the test moves it."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sim() -> AsyncIterator[ProviderSimulator]:
    async with ProviderSimulator("fast", batch_settings=BatchSimSettings()) as simulator:
        yield simulator


def write_items(folder: Path, prompts: dict[str, str]) -> Path:
    path = folder / "items.jsonl"
    lines = [json.dumps({"id": item_id, "prompt": p}) for item_id, p in prompts.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def plain_prompts(count: int, tag: str = "item") -> dict[str, str]:
    return {f"{tag}-{n}": f"{tag} prompt number {n}" for n in range(count)}


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *ABL,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(ABL_BATCH_POLL_INTERVAL=POLL),
    )


async def abl(*args: str) -> tuple[int, str, str]:
    """Run ``abl-tui ARGS`` to its end: ``(exit status, stdout, stderr)``."""
    proc = await start(*args)
    out, err = await asyncio.wait_for(proc.communicate(), PROCESS_TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def run_batch(
    sim: ProviderSimulator, items: Path, db: Path, *extra: str, provider: str = "openai"
) -> tuple[int, str]:
    model, api_base = MODEL, sim.base_url
    if provider == "anthropic":
        model, api_base = "anthropic/claude-haiku-4-5", sim.base_url.removesuffix("/v1")
    code, out, err = await abl(
        "run",
        str(items),
        "--model",
        model,
        "--api-base",
        api_base,
        "--headless",
        "--db",
        str(db),
        "--batch-api",
        *extra,
    )
    return code, out + err


def items_of(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM items").fetchall()
    return {row["item_id"]: dict(row) for row in rows}


def attempts_of(db: Path, item_id: str) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT attempt, outcome FROM attempts WHERE item_id = ? ORDER BY attempt", (item_id,)
        ).fetchall()
    return [(int(a), str(o)) for a, o in rows]


def chunks_of(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM provider_batches ORDER BY seq").fetchall()
    return [dict(row) for row in rows]


def online_prompts(sim: ProviderSimulator) -> list[str]:
    return [entry.last_user_message for entry in sim.ledger]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_batch_run_succeeds_through_the_batch_api(
    sim: ProviderSimulator, tmp_path: Path, provider: str
) -> None:
    prompts = plain_prompts(5)
    db = tmp_path / "runs.db"
    code, output = await run_batch(sim, write_items(tmp_path, prompts), db, provider=provider)

    assert code == 0, output
    assert sim.batches.submissions() == {p: 1 for p in prompts.values()}
    assert len(sim.batches.batch_ids(provider)) == 1
    assert sim.ledger == []  # nothing went online
    items = items_of(db)
    assert {i["status"] for i in items.values()} == {"succeeded"}
    assert all(i["attempts"] == 1 and i["output"].startswith("sim reply") for i in items.values())
    (chunk,) = chunks_of(db)
    assert (chunk["state"], chunk["succeeded"], chunk["provider"]) == ("ended", 5, provider)
    (run_id,) = {i["run_id"] for i in items.values()}
    (seen,) = read_chunks(db, run_id)  # what watch mode reads
    assert (seen.batch_id, seen.state) == (chunk["batch_id"], "ended")
    assert re.search(r"batches +│ +1 submitted, 1 ended", output), output


async def test_partial_failure_is_rescued_online_and_a_400_is_not_resent(
    sim: ProviderSimulator, tmp_path: Path
) -> None:
    prompts = plain_prompts(4)
    prompts["flaky"] = "flaky one [[sim:503 x1]]"  # fails in the batch, succeeds online
    prompts["bad"] = "bad one [[sim:400]]"  # a 400: final, never sent again
    db = tmp_path / "runs.db"
    code, output = await run_batch(sim, write_items(tmp_path, prompts), db)

    assert code == 1, output  # one item failed for good
    assert sim.batches.submissions() == {p: 1 for p in prompts.values()}
    assert online_prompts(sim) == [prompts["flaky"]]  # online calls only for the rescue
    items = items_of(db)
    assert items["flaky"]["status"] == "succeeded" and items["flaky"]["attempts"] == 2
    assert attempts_of(db, "flaky") == [(1, "retry"), (2, "ok")]
    assert items["bad"]["status"] == "failed" and items["bad"]["error_category"] == "bad_request"
    assert items["bad"]["attempts"] == 1
    assert sum(i["status"] == "succeeded" for i in items.values()) == 5

    # Retried by hand, the item goes online (never into a second batch), and fails again.
    code, out, err = await abl("resume", "latest", "--retry-failed", "--headless", "--db", str(db))
    assert code == 1, out + err
    assert online_prompts(sim) == [prompts["flaky"], prompts["bad"]]
    assert sim.batches.submissions() == {p: 1 for p in prompts.values()}
    assert len(sim.batches.batch_ids()) == 1
    assert attempts_of(db, "bad") == [(1, "failed"), (2, "failed")]


@pytest.mark.parametrize("rescue", ["online", "none"])
async def test_an_expired_batch_is_rescued_online_unless_told_not_to(
    sim: ProviderSimulator, tmp_path: Path, rescue: str
) -> None:
    # The provider would need 1000 s, and gives up after 0.3 s: every request expires.
    sim.batches.settings = BatchSimSettings(processing_seconds=1000, window_seconds=0.3)
    prompts = plain_prompts(3)
    db = tmp_path / "runs.db"
    code, output = await run_batch(sim, write_items(tmp_path, prompts), db, "--rescue", rescue)

    (chunk,) = chunks_of(db)
    assert chunk["provider_status"] == "expired"
    assert sim.batches.submissions() == {p: 1 for p in prompts.values()}
    items = items_of(db)
    if rescue == "online":
        assert code == 0, output
        assert sorted(online_prompts(sim)) == sorted(prompts.values())
        assert {i["status"] for i in items.values()} == {"succeeded"}
    else:
        assert code == 1, output
        assert sim.ledger == []
        assert {i["error_category"] for i in items.values()} == {"batch_expired"}


async def test_a_batch_past_its_deadline_is_cancelled_and_its_items_rescued(
    sim: ProviderSimulator, tmp_path: Path
) -> None:
    sim.batches.settings = BatchSimSettings(processing_seconds=1000)
    prompts = plain_prompts(4)
    db = tmp_path / "runs.db"
    code, output = await run_batch(
        sim, write_items(tmp_path, prompts), db, "--batch-deadline", "0.3"
    )

    assert code == 0, output
    (chunk,) = chunks_of(db)
    assert chunk["cancel_requested_at"] is not None
    assert chunk["provider_status"] == "cancelled"
    assert chunk["cancel_requested_at"] >= chunk["deadline_at"]
    assert sim.batches.submissions() == {p: 1 for p in prompts.values()}
    assert sorted(online_prompts(sim)) == sorted(prompts.values())  # none was done in time
    assert {i["status"] for i in items_of(db).values()} == {"succeeded"}
    assert all(attempts_of(db, item_id)[0] == (1, "retry") for item_id in prompts)


async def read_lines_until(stream: Any, wanted: str, count: int) -> list[str]:
    lines: list[str] = []
    while sum(wanted in line for line in lines) < count:
        raw = await asyncio.wait_for(stream.readline(), PROCESS_TIMEOUT)
        assert raw, f"the process ended before {count} x {wanted!r}: {lines}"
        lines.append(raw.decode())
    return lines


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_killed_while_its_batches_are_pending_a_run_resumes_by_polling_them(
    tmp_path: Path, sig: signal.Signals
) -> None:
    clock = FrozenClock()
    settings = BatchSimSettings(processing_seconds=60, clock=clock)
    prompts = plain_prompts(6)
    items, db = write_items(tmp_path, prompts), tmp_path / "runs.db"
    (tmp_path / "spec.toml").write_text(
        f'items = "{items}"\nmodel = "{MODEL}"\nbatch_api = true\nbatch_size = 3\n'
    )
    async with ProviderSimulator("fast", batch_settings=settings) as sim:
        first = await start(
            "run", str(tmp_path / "spec.toml"), "--api-base", sim.base_url,
            "--headless", "--db", str(db),
        )  # fmt: skip
        assert first.stdout is not None
        await read_lines_until(first.stdout, "): submitted", 2)
        first.send_signal(sig)
        assert await first.wait() == (-sig if sig == signal.SIGKILL else 128 + sig)
        assert len(sim.batches.batch_ids()) == 2
        assert [c["state"] for c in chunks_of(db)] == ["submitted", "submitted"]

        clock.now += 120  # the provider finishes both batches meanwhile
        code, out, err = await abl("resume", "latest", "--headless", "--db", str(db))

        assert code == 0, out + err
        assert len(sim.batches.batch_ids()) == 2  # no second batch for either chunk
        assert sim.batches.submissions() == {p: 1 for p in prompts.values()}
        assert sim.ledger == []
        assert [c["state"] for c in chunks_of(db)] == ["ended", "ended"]
        assert {c["batch_id"] for c in chunks_of(db)} == set(sim.batches.batch_ids())
        stored = items_of(db)
        assert {i["status"] for i in stored.values()} == {"succeeded"}
        assert {i["attempts"] for i in stored.values()} == {1}


def litellm_prices(name: str) -> dict[str, float]:
    """The model's online rates from litellm's bundled table, read as data (not through us)."""
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.submodule_search_locations
    table = Path(next(iter(spec.submodule_search_locations)))
    data = json.loads((table / "model_prices_and_context_window_backup.json").read_text())
    entry: dict[str, float] = data[name]
    return entry


async def test_a_batch_served_item_costs_half_the_online_price_for_its_tokens(
    sim: ProviderSimulator, tmp_path: Path
) -> None:
    prompts = plain_prompts(3, tag="priced")
    items = write_items(tmp_path, prompts)
    batch_db, online_db = tmp_path / "batch.db", tmp_path / "online.db"
    code, output = await run_batch(sim, items, batch_db)
    assert code == 0, output
    code, out, err = await abl(
        "run", str(items), "--model", MODEL, "--api-base", sim.base_url,
        "--headless", "--db", str(online_db),
    )  # fmt: skip
    assert code == 0, out + err

    rates = litellm_prices("gpt-4o-mini")
    batch, online = items_of(batch_db), items_of(online_db)
    for item_id in prompts:
        served = batch[item_id]
        assert served["cached_tokens"] == 0 and served["input_tokens"] > 0
        online_price = (
            served["input_tokens"] * rates["input_cost_per_token"]
            + served["output_tokens"] * rates["output_cost_per_token"]
        )
        assert served["cost"] == pytest.approx(online_price / 2, rel=1e-9)
        same_tokens = (served["input_tokens"], served["output_tokens"]) == (
            online[item_id]["input_tokens"],
            online[item_id]["output_tokens"],
        )
        assert same_tokens
        assert served["cost"] == pytest.approx(online[item_id]["cost"] / 2, rel=1e-9)


async def test_a_model_without_a_batch_api_is_refused_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    items = write_items(tmp_path, plain_prompts(2))
    db = tmp_path / "runs.db"
    code, _out, err = await abl(
        "run", str(items), "--model", "gemini/gemini-2.0-flash", "--batch-api",
        "--headless", "--db", str(db),
    )  # fmt: skip
    assert code == 2
    assert "has no batch API" in err and "gemini/gemini-2.0-flash" in err
    assert not db.exists()
