"""Run by test_crash: persist engine steps in a loop until killed, resuming from the
store. Prints each step number only after its transaction committed.

    python -m tests.store.crash_writer sqlite|postgres TARGET
"""

from __future__ import annotations

import asyncio
import sys

from coordinator.store import PostgresStore, SqliteStore, Store
from tests.store.conftest import command, deployment, event

HOSTS = ("web-1", "web-2", "web-3")


async def main(kind: str, target: str) -> None:
    store: Store = SqliteStore(target) if kind == "sqlite" else PostgresStore(target)
    async with store:
        current = await store.get_deployment("d-1")
        step = int(current.body) if current is not None else 0
        while True:
            step += 1
            async with store.transaction() as tx:
                for host in HOSTS:
                    await tx.save_command(command(f"cmd-{step}-{host}", host=host))
                await tx.append_event(
                    event(
                        float(step),
                        "step",
                        f"step {step}",
                        deployment="d-1",
                        evidence={"step": step},
                    )
                )
                await tx.save_deployment(deployment("d-1", body=str(step).encode()))
            print(step, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
