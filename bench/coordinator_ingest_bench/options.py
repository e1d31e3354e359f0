"""The command line, parsed into one typed ``Options``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

PHASES = ("ingest", "rollback", "fleet")


@dataclass(frozen=True)
class Options:
    quick: bool = False
    phases: tuple[str, ...] = PHASES
    deployments: int = 40
    fleet_rollbacks: int = 6
    ingest_rates: tuple[float, ...] = (2000.0, 4000.0, 6000.0, 8000.0)
    fleet_window: float = 20.0
    connect_rate: float = 1000.0
    keep: bool = False
    verbose: bool = False
    # Set in a child process only: what it runs and the parent's spec (JSON).
    role: str | None = None
    spec: str | None = None


def _rates(value: str) -> tuple[float, ...]:
    return tuple(float(x) for x in value.split(","))


def _phases(value: str) -> tuple[str, ...]:
    phases = tuple(value.split(","))
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown phase {', '.join(unknown)}")
    return phases


def parse(argv: list[str] | None, description: str) -> Options:
    default = Options()
    parser = argparse.ArgumentParser(prog="bench/coordinator_ingest", description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--phases", type=_phases, default=default.phases)
    parser.add_argument("--deployments", type=int, default=default.deployments)
    parser.add_argument("--fleet-rollbacks", type=int, default=default.fleet_rollbacks)
    parser.add_argument(
        "--ingest-rates",
        type=_rates,
        default=default.ingest_rates,
        help="offered messages/s, one window each, in the ingest phase (0: as fast as "
        "the load processes can)",
    )
    parser.add_argument("--fleet-window", type=float, default=default.fleet_window)
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=default.connect_rate,
        help="new agent connections per second while a fleet level ramps up",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return Options(
        quick=args.quick,
        phases=args.phases,
        deployments=args.deployments,
        fleet_rollbacks=args.fleet_rollbacks,
        ingest_rates=args.ingest_rates,
        fleet_window=args.fleet_window,
        connect_rate=args.connect_rate,
        keep=args.keep,
        verbose=args.verbose,
        role=args.role,
        spec=args.spec,
    )
