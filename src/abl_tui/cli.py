"""The ``abl-tui`` command line: run, resume, list, export and watch batches.

Exit status:

- 0 every item succeeded; 1 some failed, or the budget (``--max-cost``) stopped the run
  (resumable); 2 bad input or usage (nothing was sent);
- 74 the run store took no more writes (disk full, locked by another process) for
  ``--store-wait`` seconds: dispatch stopped, the run is interrupted with the reason, and
  ``resume`` carries on once the cause is gone;
- 75 the run is being run by another live process (its pid, host and start are named):
  try again later, or ``resume --wait``;
- 130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM: items under way are recorded
  as interrupted and the run stays resumable, whatever the phase (storing the batch too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_STORE = 74  # the store took no writes (sysexits' EX_IOERR)
EXIT_BUSY = 75  # another process runs the run (EX_TEMPFAIL: try again later)
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143

_EXAMPLES = {
    "run": """examples:
  abl-tui run sample_batches/demo.toml                  # the demo on the simulated provider
  abl-tui run items.jsonl --model openai/gpt-4o-mini --workers 32 --rpm 500
  abl-tui run items.jsonl --model openai/my-model --api-base http://127.0.0.1:8000/v1
  abl-tui run big.jsonl --model openai/gpt-4o-mini --headless --db runs.db  # no dashboard
  abl-tui run big.jsonl --model openai/gpt-4o-mini --batch-api --batch-deadline 7200""",
    "resume": """examples:
  abl-tui resume latest                     # carry on the newest run of ./abl-runs.db
  abl-tui resume r-20261125-1a2b3c --retry-failed --headless
  abl-tui resume latest --wait              # once the process running it now has ended""",
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


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


_MAX_COST_HELP = (
    "the run's cost limit in USD: dispatch stops once the cost so far plus the calls under "
    "way reaches it (the dashboard waits for a higher limit; headless, the run ends "
    "resumable with exit status 1)"
)
_STORE_WAIT_HELP = (
    "seconds to wait for a run store that takes no writes (disk full, locked) before "
    "stopping the run, resumable, with exit status 74 (default: 30)"
)


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
    run.add_argument(
        "--transport",
        choices=("auto", "native", "litellm"),
        help="how to reach the provider: native HTTP for OpenAI-compatible and Anthropic "
        "APIs, litellm for the rest; default auto",
    )
    run.add_argument("--store-wait", type=_seconds, default=None, help=_STORE_WAIT_HELP)
    run.add_argument("--max-cost", type=_positive_float, metavar="USD", help=_MAX_COST_HELP)
    _batch_api_options(run)
    run.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="start a paid run without asking (its cost and time forecast is printed; "
        "without a terminal, a paid run needs --yes)",
    )
    _theme_option(run)

    resume = command("resume", "Resume a run: send every item without a committed result.")
    resume.add_argument("run", help="run id or 'latest'")
    resume.add_argument("--headless", action="store_true", help="no dashboard")
    resume.add_argument("--retry-failed", action="store_true", help="send failed items again too")
    resume.add_argument(
        "--wait",
        action="store_true",
        help="if another process is running the run, wait for it to end (else exit 75)",
    )
    resume.add_argument(
        "--items-changed",
        choices=("refuse", "ignore"),
        default="refuse",
        help="a run stopped while its batch was being stored finishes storing it from the "
        "items file: refuse (default) if that file changed since, or ignore the change",
    )
    resume.add_argument("--store-wait", type=_seconds, default=None, help=_STORE_WAIT_HELP)
    resume.add_argument("--max-cost", type=_positive_float, metavar="USD", help=_MAX_COST_HELP)
    _theme_option(resume)

    runs = command("runs", "List the runs in the store.")
    runs.add_argument("--format", choices=("table", "json"), default="table")

    export = command("export", "Export a run's results, one line per item.")
    export.add_argument("run", help="run id or 'latest'")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")

    watch = command("watch", "Follow a run another process is writing (read-only dashboard).")
    watch.add_argument("run", help="run id or 'latest'")
    _theme_option(watch)
    return parser


def _batch_api_options(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group(
        "provider batch API",
        "half the price for runs that can wait (openai/, anthropic/ and simulated/ models)",
    )
    group.add_argument(
        "--batch-api",
        action="store_true",
        default=None,
        help="send the items through the provider's batch API (OpenAI Batches, Anthropic "
        "Message Batches): billed at the batch price, answered within the provider's window",
    )
    group.add_argument(
        "--batch-deadline",
        type=_positive_float,
        metavar="SECONDS",
        help="cancel a batch still running this long after its submission; what it had not "
        "done is rescued (default: the provider's own window, 24 h)",
    )
    group.add_argument(
        "--rescue",
        choices=("online", "none"),
        help="items a batch could not finish (a retryable error, expired, cancelled) are sent "
        "online with the normal retries and pacing (online, the default), or left failed "
        "(none); a non-retryable failure (a 400) is never resent",
    )


def _theme_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--theme",
        metavar="NAME",
        help="dashboard theme (abl-dark, abl-light, any Textual theme or one of yours); "
        "remembered for the next start, like a theme picked in the dashboard",
    )


def _theme(args: argparse.Namespace) -> str | None:
    """The theme to start with: ``--theme`` (checked, then saved), else the saved one."""
    from .preferences import Preferences

    preferences = Preferences()
    if args.theme is None:
        return preferences.theme()
    known = _theme_names()
    if args.theme not in known:
        raise _UsageError(f"unknown theme {args.theme!r}; known: {', '.join(sorted(known))}")
    preferences.save_theme(args.theme)
    return str(args.theme)


def _theme_names() -> set[str]:
    from textual.theme import BUILTIN_THEMES

    from .themes import load_all_themes

    return set(BUILTIN_THEMES) | {theme.name for theme in load_all_themes().themes}


def _save_theme(name: str) -> None:
    from .preferences import Preferences

    Preferences().save_theme(name)


class _UsageError(Exception):
    """A command line that cannot be carried out (exit status 2, nothing sent)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``abl-tui``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.db is None:
        args.db = _default_db()
    _redact_logs()
    try:
        status = _dispatch(args)
    except KeyboardInterrupt:  # before the runner started (or while listing, exporting)
        print("interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    except BrokenPipeError:  # `abl-tui export latest | head`: the reader left, nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = EXIT_OK
    return status


def _redact_logs() -> None:
    """Every log line this process prints passes through the redactor (a provider may echo a
    key into an error that is logged)."""
    import logging

    from async_batch_llm.secrets import RedactingFilter

    handlers = [*logging.getLogger().handlers, logging.lastResort]
    for handler in handlers:
        if handler is not None and not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


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
    except (BatchFileError, _UsageError) as exc:
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
        max_cost=args.max_cost,
        batch_api=args.batch_api,
        batch_deadline=args.batch_deadline,
        rescue=args.rescue,
        transport=args.transport,
    )
    if not settings.name:
        settings = settings.merged(name=batch.items_path.stem)
    theme = _theme(args)  # a bad --theme is refused before the paid-run question, not after
    if not _confirmed(settings, batch.items_path, yes=args.yes):
        return EXIT_USAGE
    plan = RunPlan(
        db_path=args.db,
        settings=settings,
        items_path=batch.items_path,
        source=str(args.batch),
        keep_open=_use_dashboard(args),
        buffer_events=_use_dashboard(args),  # headless reads counts, folds no events
        store_wait=_store_wait(args),
    )
    return _execute(plan, dashboard=_use_dashboard(args), theme=theme)


def _confirmed(settings: Any, items_path: Path, *, yes: bool) -> bool:
    """A run that may cost money shows its forecast and asks ``Start? ~$4.10 (+/- 15%),
    ~25 min`` first: on a terminal it waits for y; without one it refuses (exit 2) unless
    ``--yes`` was given, since nobody is there to see the cost."""
    if settings.dry_run:  # sends nothing: no forecast (nor the price tables it imports)
        return True
    from .forecast import forecast, needs_confirmation

    if not needs_confirmation(settings):
        return True
    expected = forecast(settings, items_path)
    print(f"abl-tui: {expected.detail()}", file=sys.stderr)
    if yes:
        print(
            f"abl-tui: {expected.question().removeprefix('Start? ')}: starting (--yes)",
            file=sys.stderr,
        )
        return True
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise _UsageError(
            f"{expected.question()} This run may cost money and there is no terminal to "
            "confirm it: pass --yes to start it"
        )
    try:
        answer = input(f"{expected.question()} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("abl-tui: not started; nothing was sent", file=sys.stderr)
    return False


def _store_wait(args: argparse.Namespace) -> float:
    from .runner import STORE_WAIT

    return STORE_WAIT if args.store_wait is None else float(args.store_wait)


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
        buffer_events=_use_dashboard(args),  # headless reads counts, folds no events
        wait=args.wait,
        items_changed=args.items_changed,
        store_wait=_store_wait(args),
        max_cost=args.max_cost,
    )
    return _execute(plan, dashboard=_use_dashboard(args), theme=_theme(args))


def _execute(plan: Any, *, dashboard: bool, theme: str | None = None) -> int:
    from .runner import Runner

    runner: Any = Runner(plan)
    with _stop_on_signals(runner) as stop:
        runner.start()
        # The batch is validated as it is stored, before anything is sent: a bad file ends
        # here with exit status 2, having stored and sent nothing.
        _wait_ready(runner)
        if runner.outcome.error is not None or stop.signal is not None:
            runner.join()
            return exit_status(runner, stop.signal)
        if dashboard:
            from .app import run_dashboard

            # the runs screen may switch runs: the runner in use at the end is returned
            runner = run_dashboard(
                runner,
                started=True,
                theme=theme,
                on_theme_chosen=_save_theme,
                on_runner_switched=stop.follow,
            )
        else:
            from .headless import run_headless

            run_headless(runner)
        runner.join()
    return exit_status(runner, stop.signal)


def _wait_ready(runner: Any) -> None:
    """Wait until the run is set up, saying on stderr what takes long (storing a big batch,
    waiting for another process's run)."""
    shown = ""
    while not runner.wait_ready(timeout=0.5 if shown else 1.0):
        phase = getattr(runner, "phase", "")
        if phase and phase != shown:
            print(f"abl-tui: {phase}…", file=sys.stderr, flush=True)
            shown = phase


class _Stop:
    """SIGINT and SIGTERM stop the runner (whatever it is doing); a second one ends the
    process at once (like SIGKILL, which loses nothing committed)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.signal: int | None = None

    def follow(self, runner: Any) -> None:
        """Stop this runner from now on (the dashboard switched to another run)."""
        self.runner = runner

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            os._exit(128 + signum)
        self.signal = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        # os.write, not print: the handler may run in the middle of another write to stderr.
        os.write(
            2,
            f"abl-tui: {name}: stopping; items under way are recorded as interrupted and "
            "the run stays resumable (again to quit at once)\n".encode(),
        )
        self.runner.cancel()


@contextlib.contextmanager
def _stop_on_signals(runner: Any) -> Iterator[_Stop]:
    """Route SIGINT and SIGTERM to ``runner.cancel()`` while the run goes (main thread only)."""
    stop = _Stop(runner)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_status(runner: Any, received: int | None = None) -> int:
    """The exit status a finished runner's outcome calls for (``received``: the signal that
    stopped it, if one did)."""
    outcome = runner.outcome
    if getattr(outcome, "busy", False):
        print(f"abl-tui: error: {outcome.error}", file=sys.stderr)
        return EXIT_BUSY
    failure = getattr(outcome, "store_failure", None)
    if failure is not None:
        print(f"abl-tui: error: {failure}", file=sys.stderr)
        print(f"abl-tui: once that is fixed: abl-tui resume {outcome.run_id}", file=sys.stderr)
        return EXIT_STORE
    if outcome.error is not None:
        print(f"abl-tui: error: {outcome.error}", file=sys.stderr)
        return EXIT_USAGE if outcome.usage_error else EXIT_FAILED
    if getattr(outcome, "budget_stop", False):
        print(f"abl-tui: stopped: {outcome.note}", file=sys.stderr)
        print(f"abl-tui: to go on: abl-tui resume {outcome.run_id} --max-cost USD", file=sys.stderr)
        return EXIT_FAILED
    if received is not None:
        return 128 + received
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
    from async_batch_llm.store.export import open_export_file

    store = await RunStore.open(args.db, readonly=True)
    try:
        run = await store.get_run(args.run)
        if args.output is None:
            await store.export(run.id, args.format, sys.stdout)
        else:
            with open_export_file(args.output) as out:  # 0600: answers may be private
                await store.export(run.id, args.format, out)
    finally:
        await store.close()
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    from .watch import run_watch

    return run_watch(args.db, args.run, theme=_theme(args), on_theme_chosen=_save_theme)


if __name__ == "__main__":
    sys.exit(main())
