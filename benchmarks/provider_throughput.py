"""Calls per second through each way of reaching a provider, against one loopback server.

A minimal OpenAI-compatible server runs in its own process (``--latency`` seconds per answer,
20 ms by default, a fixed reply with usage) and these clients send it ``--calls`` calls at
``--workers`` concurrency, one after another, in one run:

- ``bare aiohttp``: one ``ClientSession``, ``--workers`` tasks POSTing and parsing JSON;
- ``engine, native``: ``ParallelBatchProcessor`` + ``LiteLLMStrategy(transport="native")``;
- ``engine, litellm``: the same with ``transport="litellm"`` (``--litellm-calls``, as it is slow);
- ``abl-tui run --headless``: the whole command in a subprocess, run store and display
  included, ``--transport native`` (its calls/s counts the whole process, start-up included).

For each: calls/s, the ratio to the bare client, and the client's CPU per call
(``getrusage`` of this process, or of the finished child for the command). The server's CPU
is not counted. The targets (issue 10): the engine on the native transport at >= 0.5x the
bare client's calls/s, <= 0.5 ms of client CPU per call.

    python benchmarks/provider_throughput.py [--calls 5000] [--workers 256] [--latency 0.02]
        [--litellm-calls 2000] [--skip litellm,cli] [--server tiny|simulator]

``ABL_JSON_CODEC=orjson`` in the environment switches the native transport's JSON codec.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from servers import listening_process  # a sibling script: its folder is on sys.path

MODEL = "openai/gpt-4o-mini"
KEY = "bench-key-0000"


# --- the server (its own process) ----------------------------------------------------------------


def serve(latency: float) -> None:
    """A minimal chat-completions server: wait ``latency``, answer a fixed completion."""
    from aiohttp import web

    reply = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": 1,
                "total_tokens": 13,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }
    ).encode()

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        if latency:
            await asyncio.sleep(latency)
        return web.Response(body=reply, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = runner.addresses[0][1]
        print(f"listening on http://127.0.0.1:{port}/v1", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


@contextlib.contextmanager
def server_process(kind: str, latency: float) -> Iterator[str]:
    """Start the server in a child process; yield its base URL (ending in /v1)."""
    if kind == "tiny":
        command = [sys.executable, __file__, "--serve", "--latency", str(latency)]
    else:
        command = [sys.executable, "-m", "async_batch_llm.simulator", "--port", "0"]
        command += ["--profile", "fast", "--set", f"latency_mean={latency}"]
    with listening_process(command) as (_, base_url):
        yield base_url


# --- the clients ------------------------------------------------------------------------------


@dataclass
class Row:
    client: str
    calls: int
    seconds: float
    cpu_seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / self.calls


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def measured(name: str, calls: int, run: Callable[[], Awaitable[None]]) -> Row:
    cpu, wall = _cpu(), time.perf_counter()
    await run()
    return Row(name, calls, time.perf_counter() - wall, _cpu() - cpu)


async def bare_client(base_url: str, calls: int, workers: int) -> None:
    """``workers`` tasks sharing one session, each POSTing and parsing until ``calls`` are done."""
    import aiohttp

    url = base_url + "/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    numbers = iter(range(calls))
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for n in numbers:
                body = {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"item {n}"}],
                }
                async with session.post(url, data=json.dumps(body), headers=headers) as response:
                    data = json.loads(await response.read())
                if not data["choices"][0]["message"]["content"]:
                    raise RuntimeError("empty reply")

        await asyncio.gather(*(worker() for _ in range(workers)))


async def engine(base_url: str, calls: int, workers: int, transport: str) -> None:
    """The engine with ``LiteLLMStrategy`` on ``transport``; every call must succeed."""
    from async_batch_llm import (
        LiteLLMStrategy,
        LLMWorkItem,
        ParallelBatchProcessor,
        ProcessorConfig,
    )

    strategy = LiteLLMStrategy(MODEL, api_base=base_url, api_key=KEY, transport=transport)
    config = ProcessorConfig(max_workers=workers, timeout_per_item=60.0)
    processor: ParallelBatchProcessor[str, str, None] = ParallelBatchProcessor(config=config)
    async with processor:
        for n in range(calls):
            await processor.add_work(LLMWorkItem(f"item-{n}", strategy, f"item {n}"))
        result = await processor.process_all()
    if result.succeeded != calls:
        raise RuntimeError(f"{result.failed} of {calls} calls failed on {transport}")


def cli_run(base_url: str, calls: int, workers: int, folder: Path) -> Row:
    """``abl-tui run --headless --transport native`` as a whole process."""
    items = folder / "items.jsonl"
    with items.open("w") as out:
        for n in range(calls):
            out.write(json.dumps({"id": f"item-{n}", "prompt": f"item {n}"}) + "\n")
    command = ["abl-tui", "run", str(items), "--headless", "--model", MODEL]
    command += ["--api-base", base_url, "--workers", str(workers), "--db", str(folder / "runs.db")]
    command += ["--timeout", "60", "--transport", "native"]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(OPENAI_API_KEY=KEY, NO_PROXY="127.0.0.1", LITELLM_LOCAL_MODEL_COST_MAP="True")
    cpu, wall = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    seconds = time.perf_counter() - wall
    if done.returncode != 0:
        raise RuntimeError(f"abl-tui run failed ({done.returncode}): {done.stderr[-2000:]}")
    return Row("abl-tui run --headless", calls, seconds, _cpu(resource.RUSAGE_CHILDREN) - cpu)


# --- the run ----------------------------------------------------------------------------------


def report(rows: list[Row], args: argparse.Namespace, load: tuple[float, float]) -> None:
    from async_batch_llm.providers.native.codec import CODEC

    bare = rows[0].rate
    print(
        f"\n{args.calls} calls, {args.workers} workers, {args.latency * 1000:.0f} ms latency, "
        f"server '{args.server}' in its own process, JSON codec '{CODEC}', "
        f"load average {load[0]:.2f} before, {load[1]:.2f} after, {os.cpu_count()} CPUs\n"
    )
    print("| client | calls | calls/s | ratio to bare | client CPU ms/call |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.client} | {row.calls} | {row.rate:,.0f} | {row.rate / bare:.2f}x "
            f"| {row.cpu_ms:.3f} |"
        )


async def run_all(args: argparse.Namespace, base_url: str, folder: Path) -> list[Row]:
    skip = set(args.skip.split(",")) if args.skip else set()
    calls, workers = args.calls, args.workers
    rows = [await measured("bare aiohttp", calls, lambda: bare_client(base_url, calls, workers))]
    rows.append(
        await measured("engine, native", calls, lambda: engine(base_url, calls, workers, "native"))
    )
    if "litellm" not in skip:
        from async_batch_llm.providers._litellm_import import load_litellm, warm_up

        await asyncio.to_thread(load_litellm)
        await asyncio.to_thread(warm_up, MODEL)
        few = args.litellm_calls
        rows.append(
            await measured(
                "engine, litellm", few, lambda: engine(base_url, few, workers, "litellm")
            )
        )
    if "cli" not in skip:
        rows.append(await asyncio.to_thread(cli_run, base_url, calls, workers, folder))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--litellm-calls", type=int, default=2000)
    parser.add_argument("--skip", default="", help="comma-separated: litellm, cli")
    parser.add_argument("--server", choices=("tiny", "simulator"), default="tiny")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.latency)
        return
    load_before = os.getloadavg()[0]
    with (
        server_process(args.server, args.latency) as base_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        rows = asyncio.run(run_all(args, base_url, Path(tmp)))
    report(rows, args, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
