"""`python -m podwire.agent --config FILE`: run one node's agent until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from podwire.agent.config import AgentConfig
from podwire.agent.daemon import Agent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="podwire-agent", description=__doc__)
    parser.add_argument("--config", required=True, help="JSON file of agent settings")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    try:
        config = AgentConfig.from_file(args.config)
    except (OSError, ValueError, TypeError) as err:
        print(f"podwire-agent: bad configuration {args.config}: {err}", file=sys.stderr)
        return 2
    agent = Agent(config)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    try:
        agent.start()
        done.wait()
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
