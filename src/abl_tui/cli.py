"""The ``abl-tui`` command line: run, resume, list, export and watch batches.

Exit status: 0 every item succeeded, 1 some failed, 2 bad input or usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_EXAMPLES = {
    "run": """examples:
  abl-tui run sample_batches/demo.toml                  # the demo on the simulated provider
  abl-tui run items.jsonl --model openai/gpt-4o-mini --workers 32 --rpm 500
  abl-tui run items.jsonl --model openai/my-model --api-base http://127.0.0.1:8000/v1
  abl-tui run big.jsonl --headless --db runs.db         # no dashboard: progress on stdout""",
    "resume": """examples:
  abl-tui resume latest                     # carry on the newest run of ./abl-runs.db
  abl-tui resume r-20261125-1a2b3c --retry-failed --headless""",
    "runs": """examples:
  abl-tui runs
  abl-tui runs --format json --db runs.db""",
    "export": """examples:
  abl-tui export latest --format jsonl --output results.jsonl
  abl-tui export r-20261125-1a2b3c --format csv""",
    "watch": """examples:
  abl-tui watch latest --db runs.db         # follow a run another abl-tui is writing""",
}


def _default_db() -> Path:
    return Path(os.environ.get("ABL_DB", "abl-runs.db"))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="abl-tui",
        description="Run large batches of LLM calls, watch them live, resume and retry them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `abl-tui COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"abl-tui {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument(
            "--db",
            type=Path,
            default=None,
            help="run store (default: $ABL_DB or ./abl-runs.db)",
        )
        return sub

    run = command("run", "Run a batch (a JSONL items file or a TOML spec).")
    run.add_argument("batch", type=Path, help="items .jsonl or spec .toml")
    run.add_argument("--headless", action="store_true", help="no dashboard: progress on stdout")
    run.add_argument("--model", help="litellm model, e.g. openai/gpt-4o-mini or simulated/demo")
    run.add_argument("--api-base", help="base URL of an OpenAI-compatible server")
    run.add_argument("--workers", type=_positive_int, help="concurrent requests")
    run.add_argument("--rpm", type=_positive_float, help="requests per minute to stay under")
    run.add_argument("--tpm", type=_positive_float, help="tokens per minute to stay under")
    run.add_argument("--max-attempts", type=_positive_int, help="attempts per item")
    run.add_argument("--timeout", type=_positive_float, help="seconds per attempt")
    run.add_argument("--name", help="a name for the run")
    run.add_argument(
        "--dry-run", action="store_true", default=None, help="send nothing; fake every answer"
    )

    resume = command("resume", "Resume a run: send every item without a committed result.")
    resume.add_argument("run", help="run id or 'latest'")
    resume.add_argument("--headless", action="store_true", help="no dashboard")
    resume.add_argument("--retry-failed", action="store_true", help="send failed items again too")

    runs = command("runs", "List the runs in the store.")
    runs.add_argument("--format", choices=("table", "json"), default="table")

    export = command("export", "Export a run's results, one line per item.")
    export.add_argument("run", help="run id or 'latest'")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")

    watch = command("watch", "Follow a run another process is writing (read-only dashboard).")
    watch.add_argument("run", help="run id or 'latest'")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``abl-tui``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.db is None:
        args.db = _default_db()
    try:
        status = _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    except BrokenPipeError:  # `abl-tui export latest | head`: the reader left, nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = EXIT_OK
    return status


def _dispatch(args: argparse.Namespace) -> int:
    from async_batch_llm.store import StoreError

    from .batchfile import BatchFileError

    try:
        if args.command == "run":
            return _run(args)
        if args.command == "resume":
            return _resume(args)
        if args.command == "runs":
            return asyncio.run(_list_runs(args))
        if args.command == "export":
            return asyncio.run(_export(args))
        if args.command == "watch":
            return _watch(args)
    except BatchFileError as exc:
        print(f"abl-tui: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"abl-tui: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    raise AssertionError(f"unknown command {args.command}")


def _use_dashboard(args: argparse.Namespace) -> bool:
    return not args.headless and sys.stdout.isatty() and sys.stdin.isatty()


def _run(args: argparse.Namespace) -> int:
    from .batchfile import load_batch
    from .runner import RunPlan

    batch = load_batch(args.batch)
    settings = batch.spec.merged(
        model=args.model,
        api_base=args.api_base,
        workers=args.workers,
        rpm=args.rpm,
        tpm=args.tpm,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        name=args.name,
        dry_run=args.dry_run,
    )
    if not settings.name:
        settings = settings.merged(name=batch.items_path.stem)
    plan = RunPlan(
        db_path=args.db,
        settings=settings,
        items_path=batch.items_path,
        source=str(args.batch),
        keep_open=_use_dashboard(args),
    )
    return _execute(plan, dashboard=_use_dashboard(args))


def _resume(args: argparse.Namespace) -> int:
    from async_batch_llm.store import StoreError

    from .runner import RunPlan

    if not args.db.is_file():
        raise StoreError(f"no run store at {args.db}")
    plan = RunPlan(
        db_path=args.db,
        run_ref=args.run,
        retry_failed=args.retry_failed,
        keep_open=_use_dashboard(args),
    )
    return _execute(plan, dashboard=_use_dashboard(args))


def _execute(plan: Any, *, dashboard: bool) -> int:
    from .runner import Runner

    runner = Runner(plan)
    runner.start()
    # The batch is validated as it is stored, before anything is sent: a bad file ends
    # here with exit status 2, having stored and sent nothing.
    if not runner.wait_ready(timeout=1.0):
        print("abl-tui: storing the batch…", file=sys.stderr)
        runner.wait_ready()
    if runner.outcome.error is not None:
        runner.join()
        return exit_status(runner)
    if dashboard:
        from .app import run_dashboard

        runner = run_dashboard(runner, started=True)  # the runs screen may switch runs
    else:
        from .headless import run_headless

        run_headless(runner)
    return exit_status(runner)


def exit_status(runner: Any) -> int:
    """The exit status a finished runner's outcome calls for."""
    outcome = runner.outcome
    if outcome.error is not None:
        print(f"abl-tui: error: {outcome.error}", file=sys.stderr)
        return EXIT_USAGE if outcome.usage_error else EXIT_FAILED
    if outcome.interrupted or outcome.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.failed == 0 else EXIT_FAILED


async def _list_runs(args: argparse.Namespace) -> int:
    from async_batch_llm.store import RunStore

    from .report import print_runs

    store = await RunStore.open(args.db, readonly=True)
    try:
        runs = await store.list_runs()
    finally:
        await store.close()
    print_runs(runs, fmt=args.format)
    return EXIT_OK


async def _export(args: argparse.Namespace) -> int:
    from async_batch_llm.store import RunStore

    store = await RunStore.open(args.db, readonly=True)
    try:
        run = await store.get_run(args.run)
        if args.output is None:
            await store.export(run.id, args.format, sys.stdout)
        else:
            with args.output.open("w", encoding="utf-8", newline="") as out:
                await store.export(run.id, args.format, out)
    finally:
        await store.close()
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    from .app import run_watch

    return run_watch(args.db, args.run)


if __name__ == "__main__":
    sys.exit(main())
