"""The forecast before a paid run: tokens from the prompts, the price table, the limits, and
the question ``Start? ~$4.10 (+/- 15%), ~25 min`` (``--yes`` skips it; no terminal, no
``--yes``: refused with exit 2, nothing sent)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from abl_tui import cli
from abl_tui.batchfile import BatchSpec
from abl_tui.forecast import (
    OUTPUT_TOKENS_GUESS,
    Forecast,
    forecast,
    needs_confirmation,
)
from async_batch_llm.providers.pricing import model_price
from async_batch_llm.simulator import ProviderSimulator
from support import cli_env


def write_items(path: Path, prompts: list[str]) -> Path:
    with path.open("w") as out:
        for number, prompt in enumerate(prompts):
            out.write(json.dumps({"id": f"i{number}", "prompt": prompt}) + "\n")
    return path


def test_the_question_reads_like_the_issue_asks() -> None:
    expected = Forecast(1000, 1, 1, 4.1, 1500.0, "rpm", False, "openai/gpt-4o-mini")
    assert expected.question() == "Start? ~$4.10 (+/- 15%), ~25 min"
    unpriced = Forecast(10, 1, 1, None, 20.0, "workers", True, "openai/mine")
    assert unpriced.question() == "Start? cost unknown, ~20 s"
    assert "openai/mine is not in the price table" in unpriced.detail()
    assert f"~{OUTPUT_TOKENS_GUESS} output tokens an item assumed" in unpriced.detail()


def test_forecast_from_prompts_prices_and_limits(tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.jsonl", ["x" * 400] * 100)
    settings = BatchSpec(
        items=str(items), model="openai/gpt-4o-mini", max_tokens=16, workers=64, rpm=600
    )
    result = forecast(settings, items)
    assert result.items == 100
    assert result.input_tokens == 100 * (400 // 4 + 4)
    assert result.output_tokens == 100 * 16 and not result.output_assumed
    price = model_price("openai", "gpt-4o-mini")
    assert price is not None
    assert result.cost == pytest.approx(100 * price.cost(104, 16))
    assert result.bound_by == "rpm" and result.seconds == pytest.approx(10.0)
    slower = forecast(settings.merged(rpm=None, workers=2), items)
    assert slower.bound_by == "workers" and slower.seconds == pytest.approx(75.0)
    by_tokens = forecast(settings.merged(rpm=None, tpm=1200), items)
    assert by_tokens.bound_by == "tpm" and by_tokens.seconds == pytest.approx(100 * 120 / 20)
    # Through the provider's batch API: half the price, and the provider's window for time.
    batch = forecast(settings.merged(batch_api=True, batch_deadline=7200), items)
    assert batch.cost == pytest.approx(result.cost / 2)
    assert batch.seconds == 7200 and "batch window" in batch.bound_by
    assert "gpt-4o-mini batch" in batch.detail()


def test_which_runs_need_a_confirmation(tmp_path: Path) -> None:
    def spec(**fields: object) -> BatchSpec:
        return BatchSpec.model_validate({"items": "x.jsonl", **fields})

    assert needs_confirmation(spec(model="openai/gpt-4o-mini"))
    assert needs_confirmation(spec(model="anthropic/some-new-model"))  # hosted: may cost
    assert needs_confirmation(spec(model="openai/gpt-4o-mini", api_base="https://gw.example/v1"))
    assert not needs_confirmation(spec(model="openai/mine", api_base="https://gw.example/v1"))
    # A server on this machine or the local network bills nobody, whatever the model's name.
    for local in ("http://127.0.0.1:1", "http://localhost:8000/v1", "http://10.0.0.7:8000/v1"):
        assert not needs_confirmation(spec(model="openai/gpt-4o-mini", api_base=local))
    assert not needs_confirmation(spec(model="openai/gpt-4o-mini", dry_run=True))
    assert not needs_confirmation(spec(model="simulated/demo"))
    assert needs_confirmation(
        spec(model="openai/mine", api_base="http://127.0.0.1:1", price_as="openai/gpt-4o-mini")
    )


def billed_spec(items: Path) -> Path:
    """A spec that declares its calls billed (``price_as``): a loopback server alone is not."""
    spec = items.with_name("paid.toml")
    spec.write_text(
        f'items = "{items.name}"\nmodel = "openai/mine"\nprice_as = "openai/gpt-4o-mini"\n',
        encoding="utf-8",
    )
    return spec


@pytest.fixture
def sim(tmp_path: Path):  # type: ignore[no-untyped-def]
    simulator = ProviderSimulator("fast", ledger_path=tmp_path / "ledger.jsonl")
    simulator.start_in_thread()
    yield simulator
    simulator.stop_thread()


def test_without_a_terminal_a_paid_run_needs_yes(
    tmp_path: Path, sim: ProviderSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    items = write_items(tmp_path / "items.jsonl", ["Classify: kettle"] * 3)
    db = tmp_path / "runs.db"
    argv = ["run", str(billed_spec(items)), "--headless", "--db", str(db)]
    argv += ["--api-base", sim.base_url]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Start? ~$" in err and "(+/- 15%)" in err and "pass --yes" in err
    assert not db.exists() and sim.count() == 0  # nothing stored, nothing sent
    assert cli.main([*argv, "--yes"]) == cli.EXIT_OK
    assert "starting (--yes)" in capsys.readouterr().err
    assert sim.count() == 3


def test_on_a_terminal_the_question_waits_for_an_answer(
    tmp_path: Path, sim: ProviderSimulator
) -> None:
    """The real command in a pseudo-terminal: "n" sends nothing, "y" runs."""
    items = write_items(tmp_path / "items.jsonl", ["Classify: kettle"] * 2)
    for answer, status in (("n", cli.EXIT_USAGE), ("y", cli.EXIT_OK)):
        argv = [sys.executable, "-m", "abl_tui.cli", "run", str(billed_spec(items))]
        argv += ["--headless", "--db", str(tmp_path / "runs.db"), "--api-base", sim.base_url]
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(
            argv, stdin=secondary, stdout=secondary, stderr=secondary, env=cli_env()
        )
        os.close(secondary)
        seen = b""
        while b"[y/N]" not in seen:
            ready, _, _ = select.select([primary], [], [], 60)
            assert ready, f"no question in {seen!r}"
            seen += os.read(primary, 4096)
        assert b"Start? ~$" in seen
        os.write(primary, f"{answer}\n".encode())
        output = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(60) == status, output
        os.close(primary)
    assert sim.count() == 2  # only the "y" run sent anything
