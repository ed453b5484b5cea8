"""``python -m async_batch_llm.simulator``: run the simulator standalone."""

from .server import main

main()
