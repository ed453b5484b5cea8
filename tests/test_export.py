"""Exports leave the store clean: no key, no spreadsheet formula, files only their owner reads."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from async_batch_llm import LLMWorkItem, ParallelBatchProcessor, ProcessorConfig
from async_batch_llm.secrets import refresh_environment
from async_batch_llm.store import RunStore, StoreError
from async_batch_llm.store.export import csv_safe, open_export_file
from async_batch_llm.testing.fake import FakeBadRequestError, FakeStrategy

ENV_KEY = "Qz7plainEnvironmentKey0123456789"  # no known shape: only the environment tells
SHAPED_KEY = "sk-ant-api03-Xw4Pz8Rt6Ym3Jh5Gf1Dc0SaVb7Nq2Lk9"  # not anywhere this process knows

#: Item id -> (prompt, context); each prompt's answer is scripted in ANSWERS.
ITEMS = {
    "=cmd": ("p-formula", {"note": "=1+1"}),
    "plain": ("p-plain", {"n": -5}),
    "@sum": ("p-at", None),
    "leaks": ("p-leaks", {"echo": ENV_KEY}),
    "fails": ("p-fails", None),
}
ANSWERS = {
    "p-formula": '=HYPERLINK("http://evil.example","click")',
    "p-plain": "-0.25",
    "p-at": "\tindented answer",
    "p-leaks": f"the key is {ENV_KEY}",
}


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ABL_TEST_PROVIDER_API_KEY", ENV_KEY)
    refresh_environment()
    yield ENV_KEY
    monkeypatch.undo()
    refresh_environment()


@pytest.fixture
async def finished_run(
    tmp_path: Path, env_key: str, fast_config: Callable[..., ProcessorConfig]
) -> AsyncIterator[tuple[RunStore, str]]:
    """A run in a real store: answers that look like formulas, one that echoes the key, and
    a failure whose error text echoes both keys (as a hostile provider's 401 does)."""
    store = await RunStore.open(tmp_path / "runs.db")
    run_id = await store.create_run(name="export")
    await store.ingest(run_id, [(item_id, p, c) for item_id, (p, c) in ITEMS.items()])
    echo = FakeBadRequestError(f"401 Incorrect API key provided: Bearer {SHAPED_KEY} ({env_key})")
    strategy = FakeStrategy(script={"p-fails": [echo]}, response=lambda p: ANSWERS[p])
    writer = store.observer(run_id)
    processor: ParallelBatchProcessor[Any, Any, Any] = ParallelBatchProcessor(
        config=fast_config(), observers=[writer]
    )
    async for item in store.pending_items(run_id):
        await processor.add_work(LLMWorkItem(item.item_id, strategy, item.prompt, item.context))
    await processor.process_all()
    await writer.close()
    try:
        yield store, run_id
    finally:
        await store.close()


async def export_text(store: RunStore, run_id: str, fmt: str) -> str:
    out = io.StringIO()
    assert await store.export(run_id, fmt, out) == len(ITEMS)
    return out.getvalue()


async def test_csv_export_has_no_key_and_no_formula(finished_run: tuple[RunStore, str]) -> None:
    store, run_id = finished_run
    text = await export_text(store, run_id, "csv")
    assert ENV_KEY not in text and SHAPED_KEY not in text
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(text))}
    assert set(rows) == {"'=cmd", "plain", "'@sum", "leaks", "fails"}
    assert rows["'=cmd"]["output"] == "'" + ANSWERS["p-formula"]
    assert rows["plain"]["output"] == "-0.25"  # a plain number stays a number
    assert rows["plain"]["context"] == '{"n":-5}'
    assert rows["'@sum"]["output"] == "'\tindented answer"
    assert rows["leaks"]["output"] == "the key is ***"
    assert rows["leaks"]["context"] == '{"echo":"***"}'
    error = rows["fails"]["error"]
    assert "401 Incorrect API key provided: Bearer ***" in error and "(***)" in error
    for row in rows.values():
        for value in row.values():
            assert not value.startswith(("=", "+", "@", "\t", "\r")), row
            assert not value.startswith("-") or value == "-0.25", row


async def test_jsonl_export_keeps_data_as_it_is_but_no_key(
    finished_run: tuple[RunStore, str],
) -> None:
    store, run_id = finished_run
    text = await export_text(store, run_id, "jsonl")
    assert ENV_KEY not in text and SHAPED_KEY not in text
    records = {record["id"]: record for record in map(json.loads, text.splitlines())}
    assert records["=cmd"]["output"] == ANSWERS["p-formula"]  # JSON is data, not a sheet
    assert records["=cmd"]["context"] == {"note": "=1+1"}
    assert records["leaks"]["output"] == "the key is ***"
    assert records["leaks"]["context"] == {"echo": "***"}
    assert records["fails"]["error"].endswith("401 Incorrect API key provided: Bearer *** (***)")
    assert records["fails"]["success"] is False


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=SUM(A1:A9)", "'=SUM(A1:A9)"),
        ("+44 20 7946 0000", "'+44 20 7946 0000"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-0.5", "-0.5"),
        ("+3", "+3"),
        ("-1e-9", "-1e-9"),
        ("a = b", "a = b"),
        ("", ""),
    ],
)
def test_csv_safe(cell: str, expected: str) -> None:
    assert csv_safe(cell) == expected


# --- the export file ----------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_export_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    with open_export_file(path) as out:
        out.write("id\n")
    assert mode_of(path) == 0o600
    assert path.read_text() == "id\n"


def test_an_existing_world_readable_export_file_is_narrowed_and_truncated(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("an older, longer export\n")
    path.chmod(0o644)
    with open_export_file(path) as out:
        out.write("{}\n")
    assert mode_of(path) == 0o600
    assert path.read_text() == "{}\n"


def test_a_device_is_written_but_never_chmod_ed(tmp_path: Path) -> None:
    before = os.stat(os.devnull).st_mode
    with open_export_file(os.devnull) as out:
        out.write("nothing\n")
    assert os.stat(os.devnull).st_mode == before


@pytest.mark.parametrize("name", ["a-folder", "missing/out.csv"])
def test_an_unwritable_export_path_is_a_store_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "a-folder").mkdir()
    with pytest.raises(StoreError, match=r"cannot write .*(directory|No such file)"):
        open_export_file(tmp_path / name)
