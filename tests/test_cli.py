"""The ``abl-tui`` command line end to end (issues 4 and 5): the real program in subprocesses.

Every run goes to a :class:`ProviderSimulator` on loopback (never the network) that keeps a
JSONL ledger of each request it got, so the tests can say exactly what was sent: nothing for
a bad batch file or a dry run, each failed item once for ``resume --retry-failed``, and
tokens/cost in the store equal to what the provider answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import importlib.util
import io
import json
import math
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import abl_tui
from async_batch_llm.simulator import ProviderSimulator
from async_batch_llm.store import RunStore
from support import cli_env

DB_NAME = "abl-runs.db"  # the default store, in the current folder
ANSI = re.compile(r"\x1b[\[\]]")
RUN_ID = re.compile(r"^run-id: (r-\S+)$", re.MULTILINE)
EXPORT_FIELDS = {
    "id",
    "success",
    "output",
    "error",
    "error_category",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost",
}
RUNS_FIELDS = {
    "id",
    "name",
    "model",
    "status",
    "note",
    "total",
    "succeeded",
    "failed",
    "tokens",
    "cost",
    "started",
    "finished",
}
PRICED_MODEL = "gpt-4o-mini"  # in litellm's bundled cost map, so the store gets a cost


# --- helpers -----------------------------------------------------------------------------------


def abl(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``abl-tui ARGS`` to its end (stdin and stdout are not terminals)."""
    return subprocess.run(
        [sys.executable, "-m", "abl_tui.cli", *map(str, args)],
        cwd=cwd,
        env=env or cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    """A failed assertion's context: exit status and the tail of both streams."""
    out, err = proc.stdout[-3000:], proc.stderr[-3000:]
    return f"exit {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"


def write_items(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8"
    )
    return path


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """The simulator's ledger file: one dict per request, in arrival order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def runs_json(cwd: Path, *db: str | Path, env: dict[str, str] | None = None) -> list[dict]:
    proc = abl("runs", "--format", "json", *(("--db", db[0]) if db else ()), cwd=cwd, env=env)
    assert proc.returncode == 0, explain(proc)
    return json.loads(proc.stdout)


def export_jsonl(cwd: Path, *extra: str | Path) -> list[dict[str, Any]]:
    proc = abl("export", "latest", "--format", "jsonl", *extra, cwd=cwd)
    assert proc.returncode == 0, explain(proc)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def summary_value(stdout: str, label: str) -> str:
    """A row of the headless summary table, e.g. ``summary_value(out, "failed") == "2"``."""
    found = re.search(rf"^\W*{re.escape(label)}\s*\W\s*(.+?)\s*\W*$", stdout, re.MULTILINE)
    assert found, f"no {label!r} row in the summary:\n{stdout}"
    return found.group(1)


def create_empty_store(path: Path) -> None:
    async def create() -> None:
        store = await RunStore.open(path)
        await store.close()

    asyncio.run(create())


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a store file (its WAL included), via SQLite's backup."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def price_map() -> dict[str, Any]:
    """litellm's bundled cost map (what LITELLM_LOCAL_MODEL_COST_MAP=True makes it use),
    read as JSON so the test process never imports litellm."""
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    return json.loads(path.read_text(encoding="utf-8"))[PRICED_MODEL]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[ProviderSimulator]:
    """A fresh loopback provider (no latency) with its ledger in ``tmp_path/ledger.jsonl``."""
    simulator = ProviderSimulator("fast", ledger_path=tmp_path / "ledger.jsonl")
    simulator.start_in_thread()
    yield simulator
    simulator.stop_thread()


# --- version, help and usage ------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    proc = abl("--version", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.strip() == f"abl-tui {abl_tui.__version__}"


def test_help_lists_every_command(tmp_path: Path) -> None:
    proc = abl("--help", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    for command in ("run", "resume", "runs", "export", "watch"):
        assert re.search(rf"^\s+{command}\s", proc.stdout, re.MULTILINE), proc.stdout


@pytest.mark.parametrize("command", ["run", "resume", "runs", "export", "watch"])
def test_command_help_shows_examples(tmp_path: Path, command: str) -> None:
    proc = abl(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert f"usage: abl-tui {command}" in proc.stdout
    examples = proc.stdout.split("examples:", 1)
    assert len(examples) == 2, proc.stdout
    assert f"abl-tui {command}" in examples[1]
    assert "--db" in proc.stdout


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["run"],
        ["run", "items.jsonl", "--workers", "0"],
        ["run", "items.jsonl", "--workers", "many"],
        ["run", "items.jsonl", "--rpm", "-5"],
        ["run", "items.jsonl", "--timeout", "0"],
        ["run", "items.jsonl", "--no-such-flag"],
        ["resume"],
        ["runs", "--format", "yaml"],
        ["export", "latest", "--format", "xml"],
    ],
    ids=lambda argv: " ".join(argv) or "no-command",
)
def test_usage_errors_exit_2(tmp_path: Path, argv: list[str]) -> None:
    write_items(tmp_path / "items.jsonl", [{"id": "a", "prompt": "hi"}])
    proc = abl(*argv, cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert "usage: abl-tui" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / DB_NAME).exists()


# --- bad input: exit 2, file/line/field named, nothing sent, nothing stored ---------------------

GOOD_LINE = json.dumps({"id": "a", "prompt": "hello"})
SPEC_HEAD = 'name = "spec"\nitems = "items.jsonl"\n'


@dataclass(frozen=True)
class BadInput:
    """A batch that must be refused: the file(s) to write, the argument, what stderr says."""

    files: dict[str, bytes]
    batch: str
    expected: tuple[str, ...]


BAD_INPUTS = {
    "bad-json": BadInput(
        {"items.jsonl": f'{GOOD_LINE}\n{{"id": "b", "prompt": }}\n'.encode()},
        "items.jsonl",
        ("items.jsonl:2:", "invalid JSON"),
    ),
    "missing-prompt": BadInput(
        {"items.jsonl": f'{GOOD_LINE}\n\n{{"id": "b"}}\n'.encode()},
        "items.jsonl",
        ("items.jsonl:3:", "'prompt'", "missing"),
    ),
    "prompt-not-a-string": BadInput(
        {"items.jsonl": f'{GOOD_LINE}\n{{"id": "b", "prompt": 42}}\n'.encode()},
        "items.jsonl",
        ("items.jsonl:2:", "'prompt'", "must be a string"),
    ),
    "blank-id": BadInput(
        {"items.jsonl": f'{GOOD_LINE}\n{{"id": "   ", "prompt": "x"}}\n'.encode()},
        "items.jsonl",
        ("items.jsonl:2:", "'id'", "blank"),
    ),
    "id-not-a-string": BadInput(
        {"items.jsonl": b'{"id": 7, "prompt": "x"}\n'},
        "items.jsonl",
        ("items.jsonl:1:", "'id'", "must be a string"),
    ),
    "duplicate-id": BadInput(
        {
            "items.jsonl": (
                f'{GOOD_LINE}\n{{"id": "b", "prompt": "x"}}\n{{"id": "a", "prompt": "y"}}\n'
            ).encode()
        },
        "items.jsonl",
        ("items.jsonl:3:", "'id'", "duplicate", "line 1"),
    ),
    "not-an-object": BadInput(
        {"items.jsonl": f'{GOOD_LINE}\n["b", "x"]\n'.encode()},
        "items.jsonl",
        ("items.jsonl:2:", "expected a JSON object", "array"),
    ),
    "invalid-utf8": BadInput(
        {"items.jsonl": GOOD_LINE.encode() + b'\n{"id": "b", "prompt": "caf\xe9"}\n'},
        "items.jsonl",
        ("items.jsonl:2:", "UTF-8"),
    ),
    "empty-file": BadInput({"items.jsonl": b""}, "items.jsonl", ("items.jsonl", "empty")),
    "blank-lines-only": BadInput(
        {"items.jsonl": b"\n  \n\n"}, "items.jsonl", ("items.jsonl", "empty")
    ),
    "missing-file": BadInput({}, "nope.jsonl", ("nope.jsonl", "not found")),
    "bad-last-line-of-a-big-file": BadInput(
        {
            "items.jsonl": "".join(
                json.dumps({"id": f"i{n}", "prompt": f"p{n}"}) + "\n" for n in range(3000)
            ).encode()
            + b'{"id": "last"}\n'
        },
        "items.jsonl",
        ("items.jsonl:3001:", "'prompt'"),
    ),
    "toml-unknown-key": BadInput(
        {
            "spec.toml": (SPEC_HEAD + "wokers = 4\n").encode(),
            "items.jsonl": GOOD_LINE.encode() + b"\n",
        },
        "spec.toml",
        ("spec.toml:3:", "unknown key 'wokers'", "workers"),
    ),
    "toml-api-key": BadInput(
        {
            "spec.toml": (
                SPEC_HEAD + 'model = "openai/x"\napi_key = "sk-not-a-real-key-123"\n'
            ).encode(),
            "items.jsonl": GOOD_LINE.encode() + b"\n",
        },
        "spec.toml",
        ("spec.toml:4:", "'api_key'", "environment"),
    ),
    "toml-api-key-in-completion-options": BadInput(
        {
            "spec.toml": (
                SPEC_HEAD + '[completion_options]\napi_key = "sk-not-a-real-key-123"\n'
            ).encode(),
            "items.jsonl": GOOD_LINE.encode() + b"\n",
        },
        "spec.toml",
        ("spec.toml:3:", "completion_options.api_key"),
    ),
    "toml-bad-type": BadInput(
        {
            "spec.toml": (SPEC_HEAD + 'workers = "8"\n').encode(),
            "items.jsonl": GOOD_LINE.encode() + b"\n",
        },
        "spec.toml",
        ("spec.toml:3:", "'workers'", "integer"),
    ),
    "toml-bad-value": BadInput(
        {
            "spec.toml": (SPEC_HEAD + "max_attempts = 0\n").encode(),
            "items.jsonl": GOOD_LINE.encode() + b"\n",
        },
        "spec.toml",
        ("spec.toml:3:", "'max_attempts'", ">= 1"),
    ),
    "toml-syntax": BadInput(
        {"spec.toml": (SPEC_HEAD + "workers = = 4\n").encode()},
        "spec.toml",
        ("spec.toml:3:", "invalid TOML"),
    ),
    "toml-items-file-missing": BadInput(
        {"spec.toml": b'items = "missing.jsonl"\n'},
        "spec.toml",
        ("spec.toml:1:", "'items'", "missing.jsonl"),
    ),
    "toml-items-file-bad": BadInput(
        {
            "spec.toml": SPEC_HEAD.encode(),
            "items.jsonl": f'{GOOD_LINE}\n{{"id": "b", "prompt": null}}\n'.encode(),
        },
        "spec.toml",
        ("items.jsonl:2:", "'prompt'"),
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_exits_2_naming_the_place_and_costs_nothing(
    tmp_path: Path, sim: ProviderSimulator, case: BadInput
) -> None:
    """A bad batch is refused before anything is stored or sent (the ledger stays empty)."""
    for name, content in case.files.items():
        (tmp_path / name).write_bytes(content)
    create_empty_store(tmp_path / DB_NAME)
    proc = abl(
        "run", case.batch, "--headless", "--model", "openai/fake", "--api-base", sim.base_url,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)
    assert proc.stderr.startswith("abl-tui: error: "), explain(proc)
    assert len(proc.stderr.strip().splitlines()) == 1, explain(proc)  # one clear line
    for expected in case.expected:
        assert expected in proc.stderr, f"{expected!r} missing from: {proc.stderr}"
    assert "sk-not-a-real-key-123" not in proc.stderr + proc.stdout  # secrets are never echoed
    assert "run-id:" not in proc.stdout
    assert read_ledger(tmp_path / "ledger.jsonl") == []
    assert sim.ledger == []
    assert runs_json(tmp_path) == []


def test_bad_input_does_not_even_create_the_store(tmp_path: Path, sim: ProviderSimulator) -> None:
    write_items(tmp_path / "items.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    proc = abl(
        "run", "items.jsonl", "--headless", "--model", "openai/fake", "--api-base", sim.base_url,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, explain(proc)
    assert "items.jsonl:2:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / DB_NAME).exists()
    assert sim.ledger == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["export", "latest"], "no run store at"),
        (["runs"], "no run store at"),
        (["export", "latest", "--db", "notes.txt"], "notes.txt is a text file"),
        (["resume", "latest", "--db", "notes.txt"], "notes.txt is a text file"),
        (["resume", "latest", "--db", "empty.db"], "no runs in"),
        (["export", "r-19990101-000000", "--db", "empty.db"], "no run 'r-19990101-000000'"),
        (["resume", "r-19990101-000000", "--db", "empty.db"], "no run 'r-19990101-000000'"),
    ],
)
def test_store_problems_exit_2_with_a_message(
    tmp_path: Path, argv: list[str], expected: str
) -> None:
    (tmp_path / "notes.txt").write_text("just some notes\n")
    create_empty_store(tmp_path / "empty.db")
    proc = abl(*argv, cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert expected in proc.stderr, explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)
    assert not (tmp_path / DB_NAME).exists()  # reading commands never create a store


def test_resume_without_a_store_says_so_and_creates_nothing(tmp_path: Path) -> None:
    """A mistyped --db must not leave an empty store behind (nor claim it has no runs)."""
    proc = abl("resume", "latest", "--headless", "--db", "typo.db", cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)
    assert "typo.db" in proc.stderr
    assert not (tmp_path / "typo.db").exists(), "resume created an empty run store"


# --- a good headless run against the simulator ------------------------------------------------


GOOD_ITEMS = [
    *({"id": f"ok-{n:02d}", "prompt": f"Say something kind about number {n}"} for n in range(24)),
    {"id": "bad-1", "prompt": "This one is refused [[sim:400 x1]]"},
    {"id": "bad-2", "prompt": "This one is refused too [[sim:400 x1]]"},
    {"id": "flaky", "prompt": "A server hiccup first [[sim:503 x1]]"},
    {"id": "limited", "prompt": "Rate limited first [[sim:429:retry_after=0.2 x1]]"},
    {"id": "ctx", "prompt": "An item with context", "context": {"row": 7, "tags": ["a", "b"]}},
    {"id": "uni", "prompt": "Ünïcödé prompt ✓ — “quoted”, with a comma"},
]
FAILED_IDS = {"bad-1", "bad-2"}


@dataclass
class GoodRun:
    folder: Path
    sim: ProviderSimulator
    ledger_path: Path
    proc: subprocess.CompletedProcess[str]
    ledger: list[dict[str, Any]]
    run_id: str

    def prompt_of(self, item_id: str) -> str:
        return next(item["prompt"] for item in GOOD_ITEMS if item["id"] == item_id)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoodRun]:
    """One headless run of GOOD_ITEMS (two fail with a 400) into the default store."""
    folder = tmp_path_factory.mktemp("good-run")
    ledger_path = folder / "ledger.jsonl"
    simulator = ProviderSimulator("fast", ledger_path=ledger_path)
    url = simulator.start_in_thread()
    try:
        write_items(folder / "items.jsonl", GOOD_ITEMS)
        proc = abl(
            "run", "items.jsonl", "--headless", "--workers", "4",
            "--model", f"openai/{PRICED_MODEL}", "--api-base", url, "--yes",
            cwd=folder,
        )  # fmt: skip
        ids = RUN_ID.findall(proc.stdout)
        assert ids, explain(proc)
        yield GoodRun(folder, simulator, ledger_path, proc, read_ledger(ledger_path), ids[-1])
    finally:
        simulator.stop_thread()


def test_run_with_failures_exits_1_and_prints_run_id_and_summary(good_run: GoodRun) -> None:
    proc = good_run.proc
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" not in proc.stderr, explain(proc)
    assert set(RUN_ID.findall(proc.stdout)) == {good_run.run_id}
    out = proc.stdout
    assert f"run {good_run.run_id}: failed" in out
    assert summary_value(out, "items") == str(len(GOOD_ITEMS))
    assert summary_value(out, "succeeded") == str(len(GOOD_ITEMS) - len(FAILED_IDS))
    assert summary_value(out, "failed") == str(len(FAILED_IDS))
    assert summary_value(out, "errors: bad_request") == str(len(FAILED_IDS))
    assert summary_value(out, "rate limits (429)") == "1"
    assert int(summary_value(out, "retries")) >= 1
    ok = [entry for entry in good_run.ledger if entry["outcome"] == "ok"]
    tokens_in = sum(entry["prompt_tokens"] for entry in ok)
    tokens_out = sum(entry["completion_tokens"] for entry in ok)
    assert summary_value(out, "input tokens") == f"{tokens_in:,}"
    assert summary_value(out, "output tokens") == f"{tokens_out:,}"


def test_headless_output_to_a_pipe_is_plain_lines(good_run: GoodRun) -> None:
    proc = good_run.proc
    assert not ANSI.search(proc.stdout), repr(proc.stdout[:500])
    assert not ANSI.search(proc.stderr), repr(proc.stderr[:500])
    assert "\r" not in proc.stdout  # no live display redrawing lines


def test_every_item_was_sent_and_the_ledger_matches(good_run: GoodRun) -> None:
    outcomes: dict[str, list[str]] = {}
    for entry in good_run.ledger:
        outcomes.setdefault(entry["last_user_message"], []).append(entry["outcome"])
    assert {entry["model"] for entry in good_run.ledger} == {PRICED_MODEL}
    assert outcomes[good_run.prompt_of("bad-1")] == ["400"]
    assert outcomes[good_run.prompt_of("flaky")] == ["503", "ok"]
    assert outcomes[good_run.prompt_of("limited")] == ["429", "ok"]
    for item in GOOD_ITEMS:
        if item["id"] not in FAILED_IDS | {"flaky", "limited"}:
            assert outcomes[item["prompt"]] == ["ok"], item
    assert len(good_run.ledger) == len(GOOD_ITEMS) + 2


async def test_store_holds_what_the_provider_answered(good_run: GoodRun) -> None:
    """Status, attempts, tokens and cost of every item equal the simulator's ledger."""
    prices = price_map()
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for entry in good_run.ledger:
        by_prompt.setdefault(entry["last_user_message"], []).append(entry)
    store = await RunStore.open(good_run.folder / DB_NAME, readonly=True)
    try:
        run = await store.get_run("latest")
        records = await store.items(run.id, limit=None)
        integrity = await store.integrity_check()
    finally:
        await store.close()
    assert run.id == good_run.run_id
    assert run.status == "failed"
    assert [record.item_id for record in records] == [item["id"] for item in GOOD_ITEMS]
    for record in records:
        entries = by_prompt[record.prompt]
        ok = [entry for entry in entries if entry["outcome"] == "ok"]
        assert record.attempts == len(entries), record
        if record.item_id in FAILED_IDS:
            assert record.status == "failed"
            assert record.error_category == "bad_request"
            assert record.output is None and record.cost is None
            assert (record.input_tokens, record.output_tokens) == (0, 0)
            continue
        assert record.status == "succeeded", record
        assert record.error is None
        assert len(ok) == 1
        assert record.output == f"sim reply to {record.prompt[:40]}"
        assert record.input_tokens == ok[0]["prompt_tokens"]
        assert record.output_tokens == ok[0]["completion_tokens"]
        assert record.cached_tokens == ok[0]["cached_tokens"] == 0
        expected_cost = (
            ok[0]["prompt_tokens"] * prices["input_cost_per_token"]
            + ok[0]["completion_tokens"] * prices["output_cost_per_token"]
        )
        assert record.cost is not None and math.isclose(record.cost, expected_cost, rel_tol=1e-9)
    ok_all = [entry for entry in good_run.ledger if entry["outcome"] == "ok"]
    assert run.input_tokens == sum(entry["prompt_tokens"] for entry in ok_all)
    assert run.output_tokens == sum(entry["completion_tokens"] for entry in ok_all)
    assert run.cost is not None
    assert math.isclose(run.cost, sum(r.cost or 0 for r in records), rel_tol=1e-9)
    assert (run.total, run.succeeded, run.failed, run.pending) == (len(GOOD_ITEMS), 28, 2, 0)
    assert integrity == "ok"


def test_runs_json_lists_the_run(good_run: GoodRun) -> None:
    ok = [entry for entry in good_run.ledger if entry["outcome"] == "ok"]
    runs = runs_json(good_run.folder)
    assert len(runs) == 1
    row = runs[0]
    assert set(row) == RUNS_FIELDS
    assert row["id"] == good_run.run_id
    assert row["name"] == "items"
    assert row["status"] == "failed"
    assert row["model"] == f"openai/{PRICED_MODEL}"
    assert row["note"] is None  # nothing stopped it
    assert (row["total"], row["succeeded"], row["failed"]) == (len(GOOD_ITEMS), 28, 2)
    assert row["tokens"] == sum(e["prompt_tokens"] + e["completion_tokens"] for e in ok)
    assert isinstance(row["cost"], float) and row["cost"] > 0
    started = time.mktime(time.strptime(row["started"], "%Y-%m-%d %H:%M:%S"))
    finished = time.mktime(time.strptime(row["finished"], "%Y-%m-%d %H:%M:%S"))
    assert started <= finished <= time.time() + 1
    assert abs(started - good_run.ledger[0]["time"]) < 120


def test_runs_table_shows_the_run(good_run: GoodRun) -> None:
    proc = abl("runs", cwd=good_run.folder, env=cli_env(COLUMNS="160"))
    assert proc.returncode == 0, explain(proc)
    assert not ANSI.search(proc.stdout)
    header = next(line for line in proc.stdout.splitlines() if "id" in line and "name" in line)
    for column in ("id", "name", "status", "total", "succeeded", "failed", "tokens", "cost"):
        assert re.search(rf"\b{column}\b", header), header
    row = next(line for line in proc.stdout.splitlines() if good_run.run_id in line)
    assert "items" in row and "failed" in row and str(len(GOOD_ITEMS)) in row


async def test_runs_lists_why_a_run_stopped(tmp_path: Path) -> None:
    """A run the store (or a budget) stopped carries a note: ``runs`` shows it, and the model."""
    store = await RunStore.open(tmp_path / "abl-runs.db")
    try:
        run_id = await store.create_run(name="n", settings={"model": "openai/gpt-4o-mini"})
        await store.ingest(run_id, [{"id": "a", "prompt": "p"}])
        await store.set_run_status(run_id, "running")
        await store.mark_interrupted(run_id, note="the disk is full")
    finally:
        await store.close()
    [row] = runs_json(tmp_path)
    assert (row["model"], row["note"], row["status"]) == (
        "openai/gpt-4o-mini",
        "the disk is full",
        "interrupted",
    )
    proc = abl("runs", cwd=tmp_path, env=cli_env(COLUMNS="160"))
    line = next(line for line in proc.stdout.splitlines() if run_id in line)
    assert "the disk is full" in line and "openai/gpt-4o-mini" in line
    narrow = abl("runs", cwd=tmp_path, env=cli_env(COLUMNS="80"))
    line = next(line for line in narrow.stdout.splitlines() if run_id in line)
    assert "the disk" in line  # the note stays (cut) where the model does not fit


def test_runs_table_in_80_columns_keeps_run_ids_whole(good_run: GoodRun) -> None:
    """The id is what `resume`/`export` need: a pipe or an 80-column terminal must show it."""
    proc = abl("runs", cwd=good_run.folder, env=cli_env(COLUMNS="80"))
    assert proc.returncode == 0, explain(proc)
    assert good_run.run_id in proc.stdout, proc.stdout


def test_export_jsonl(good_run: GoodRun) -> None:
    records = export_jsonl(good_run.folder)
    assert [record["id"] for record in records] == [item["id"] for item in GOOD_ITEMS]
    for record, item in zip(records, GOOD_ITEMS, strict=True):
        assert set(record) >= EXPORT_FIELDS, record
        assert record["success"] is (item["id"] not in FAILED_IDS)
        if record["success"]:
            assert record["output"] == f"sim reply to {item['prompt'][:40]}"
            assert record["error"] is None and record["error_category"] is None
            assert record["input_tokens"] > 0 and record["output_tokens"] > 0
            assert record["cost"] > 0
        else:
            assert record["output"] is None
            assert "400" in record["error"] and record["error_category"] == "bad_request"
        assert isinstance(record["attempts"], int) and record["attempts"] >= 1
    by_id = {record["id"]: record for record in records}
    assert by_id["ctx"]["context"] == {"row": 7, "tags": ["a", "b"]}
    assert by_id["flaky"]["attempts"] == 2 and by_id["limited"]["attempts"] == 2
    ok = [entry for entry in good_run.ledger if entry["outcome"] == "ok"]
    assert sum(r["input_tokens"] for r in records) == sum(e["prompt_tokens"] for e in ok)
    assert sum(r["output_tokens"] for r in records) == sum(e["completion_tokens"] for e in ok)


def test_export_csv_matches_jsonl(good_run: GoodRun) -> None:
    records = export_jsonl(good_run.folder)
    proc = abl("export", "latest", "--format", "csv", cwd=good_run.folder)
    assert proc.returncode == 0, explain(proc)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert set(rows[0]) >= EXPORT_FIELDS
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert row["id"] == record["id"]
        assert row["success"] == ("true" if record["success"] else "false")
        assert row["output"] == (record["output"] or "")
        assert row["error"] == (record["error"] or "")
        assert row["error_category"] == (record["error_category"] or "")
        for field in ("attempts", "input_tokens", "output_tokens", "cached_input_tokens"):
            assert int(row[field]) == record[field], (field, row)
        if record["cost"] is None:
            assert row["cost"] == ""
        else:
            assert math.isclose(float(row["cost"]), record["cost"], rel_tol=1e-12)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_to_a_file(good_run: GoodRun, fmt: str, tmp_path: Path) -> None:
    to_stdout = abl("export", good_run.run_id, "--format", fmt, cwd=good_run.folder)
    target = tmp_path / f"results.{fmt}"
    proc = abl("export", good_run.run_id, "--format", fmt, "--output", target, cwd=good_run.folder)
    assert proc.returncode == 0 and to_stdout.returncode == 0, explain(proc)
    assert proc.stdout == ""
    assert target.read_text(encoding="utf-8") == to_stdout.stdout
    assert len(target.read_text(encoding="utf-8").splitlines()) == len(GOOD_ITEMS) + (fmt == "csv")


def test_resume_retry_failed_resends_exactly_the_failed_items(
    good_run: GoodRun, tmp_path: Path
) -> None:
    copy_store(good_run.folder / DB_NAME, tmp_path / DB_NAME)  # the other tests keep theirs
    mark = len(read_ledger(good_run.ledger_path))
    before = {record["id"]: record for record in export_jsonl(tmp_path)}
    proc = abl("resume", "latest", "--retry-failed", "--headless", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert RUN_ID.findall(proc.stdout)[-1] == good_run.run_id
    sent = [entry["last_user_message"] for entry in read_ledger(good_run.ledger_path)[mark:]]
    assert Counter(sent) == Counter(good_run.prompt_of(item_id) for item_id in FAILED_IDS)
    after = {record["id"]: record for record in export_jsonl(tmp_path)}
    assert all(record["success"] for record in after.values())
    for item_id in FAILED_IDS:
        assert after[item_id]["attempts"] == before[item_id]["attempts"] + 1
        assert after[item_id]["input_tokens"] > 0
    for item_id in after.keys() - FAILED_IDS:
        assert after[item_id] == before[item_id]  # done items are left alone
    [row] = runs_json(tmp_path)
    assert (row["status"], row["succeeded"], row["failed"]) == ("completed", len(GOOD_ITEMS), 0)


def test_resume_of_a_finished_run_sends_nothing(good_run: GoodRun, tmp_path: Path) -> None:
    copy_store(good_run.folder / DB_NAME, tmp_path / DB_NAME)
    mark = len(read_ledger(good_run.ledger_path))
    proc = abl("resume", good_run.run_id, "--headless", cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)  # the two failed items stay failed
    assert len(read_ledger(good_run.ledger_path)) == mark
    assert [r["success"] for r in export_jsonl(tmp_path)].count(False) == len(FAILED_IDS)


def test_export_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`abl-tui export latest | head` must not end in a BrokenPipeError traceback."""

    async def fill() -> None:
        store = await RunStore.open(tmp_path / DB_NAME)
        run_id = await store.create_run(name="big", source="test", settings={})
        await store.ingest(
            run_id, ((f"i{n}", "p", {"pad": "x" * 200}) for n in range(3000))
        )  # ~700 kB of export, far more than a pipe buffers
        await store.close()

    asyncio.run(fill())
    proc = subprocess.Popen(
        [sys.executable, "-m", "abl_tui.cli", "export", "latest"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert json.loads(first)["id"] == "i0"
    assert "Traceback" not in stderr, stderr


# --- dry run, default store, non-terminal output -------------------------------------------


def test_dry_run_sends_nothing_and_every_item_succeeds(
    tmp_path: Path, sim: ProviderSimulator
) -> None:
    write_items(tmp_path / "items.jsonl", GOOD_ITEMS)
    proc = abl(
        "run", "items.jsonl", "--headless", "--dry-run",
        "--model", "openai/fake", "--api-base", sim.base_url,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, explain(proc)
    assert sim.ledger == [] and read_ledger(tmp_path / "ledger.jsonl") == []
    records = export_jsonl(tmp_path)
    assert [r["id"] for r in records] == [item["id"] for item in GOOD_ITEMS]
    assert all(r["success"] and r["error"] is None for r in records)
    assert all(r["output"] for r in records)
    [row] = runs_json(tmp_path)
    assert (row["status"], row["succeeded"], row["failed"]) == ("completed", len(GOOD_ITEMS), 0)


def test_run_without_headless_on_a_pipe_prints_plain_lines(tmp_path: Path) -> None:
    """No terminal, no dashboard: the run goes headless by itself, in plain text."""
    write_items(tmp_path / "items.jsonl", [{"id": f"i{n}", "prompt": "p"} for n in range(5)])
    proc = abl("run", "items.jsonl", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert RUN_ID.search(proc.stdout), explain(proc)
    assert not ANSI.search(proc.stdout + proc.stderr), repr(proc.stdout[:300])
    assert summary_value(proc.stdout, "succeeded") == "5"


def test_abl_db_environment_variable_and_db_flag(tmp_path: Path) -> None:
    write_items(tmp_path / "items.jsonl", [{"id": "a", "prompt": "p"}])
    env = cli_env(ABL_DB="from-env.db")
    proc = abl(
        "run", "items.jsonl", "--dry-run", "--headless", "--name", "e", cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, explain(proc)
    assert (tmp_path / "from-env.db").exists() and not (tmp_path / DB_NAME).exists()
    proc = abl(
        "run", "items.jsonl", "--dry-run", "--headless", "--db", "flag.db", cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, explain(proc)
    assert [row["name"] for row in runs_json(tmp_path, env=env)] == ["e"]
    assert [row["name"] for row in runs_json(tmp_path, "flag.db", env=env)] == ["items"]


# --- a TOML spec, and flags over it ---------------------------------------------------------


SPEC_ITEMS = [
    {"id": "plain-1", "prompt": "first plain prompt"},
    {"id": "plain-2", "prompt": "second plain prompt"},
    {"id": "hiccup", "prompt": "one server error first [[sim:503 x1]]"},
]


def write_spec(folder: Path, api_base: str) -> Path:
    """A spec in a sub-folder (its items path is relative to the spec, not the cwd)."""
    spec_dir = folder / "specs"
    spec_dir.mkdir()
    write_items(spec_dir / "spec-items.jsonl", SPEC_ITEMS)
    spec = spec_dir / "batch.toml"
    spec.write_text(
        f'name = "from the spec"\nitems = "spec-items.jsonl"\nmodel = "openai/fake"\n'
        f'api_base = "{api_base}"\nworkers = 2\nmax_attempts = 3\ntimeout = 30\nrpm = 6000\n',
        encoding="utf-8",
    )
    return spec


async def stored_run(db: Path) -> Any:
    store = await RunStore.open(db, readonly=True)
    try:
        run = await store.get_run("latest")
        return run, await store.items(run.id, limit=None)
    finally:
        await store.close()


async def test_toml_spec_settings_apply(tmp_path: Path, sim: ProviderSimulator) -> None:
    write_spec(tmp_path, sim.base_url)
    proc = await asyncio.to_thread(abl, "run", "specs/batch.toml", "--headless", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)  # the 503 is retried (max_attempts = 3)
    run, records = await stored_run(tmp_path / DB_NAME)
    assert run.name == "from the spec"
    assert run.settings["workers"] == 2 and run.settings["max_attempts"] == 3
    assert run.settings["rpm"] == 6000
    assert "items" not in run.settings  # the items path is not a setting
    hiccup = next(r for r in records if r.item_id == "hiccup")
    assert (hiccup.status, hiccup.attempts) == ("succeeded", 2)
    assert sim.requests_by_prompt()[SPEC_ITEMS[2]["prompt"]] == ["503", "ok"]


async def test_flags_override_the_toml_spec(tmp_path: Path, sim: ProviderSimulator) -> None:
    write_spec(tmp_path, "http://127.0.0.1:9/v1")  # flags replace this unreachable base
    proc = await asyncio.to_thread(
        abl,
        "run", "specs/batch.toml", "--headless", "--api-base", sim.base_url,
        "--workers", "5", "--max-attempts", "1", "--name", "flagged", "--timeout", "12",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, explain(proc)
    run, records = await stored_run(tmp_path / DB_NAME)
    assert run.name == "flagged"
    assert run.settings["workers"] == 5
    assert run.settings["max_attempts"] == 1
    assert run.settings["timeout"] == 12
    assert run.settings["api_base"] == sim.base_url
    assert run.settings["rpm"] == 6000  # not overridden: the spec's value stays
    hiccup = next(r for r in records if r.item_id == "hiccup")
    assert (hiccup.status, hiccup.attempts) == ("failed", 1)
    assert hiccup.error_category is not None and "503" in (hiccup.error or "")
    assert sim.requests_by_prompt()[SPEC_ITEMS[2]["prompt"]] == ["503"]
    assert summary_value(proc.stdout, "failed") == "1"
