"""The command line of the embedded stack (``make run``, ``make up``, ``make down``, ...)."""

from __future__ import annotations

import argparse
import logging

from scripts.stack import demo, services, summary
from scripts.stack.processes import service_pid
from scripts.stack.settings import Stack, StackError

log = logging.getLogger("nightshift.stack")

COMMANDS = ("up", "run", "down", "logs", "env", "status")


def main(argv: list[str] | None = None) -> int:
    import scripts.stack

    ap = argparse.ArgumentParser(
        prog="python -m scripts.stack",
        description=scripts.stack.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("command", choices=COMMANDS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        stack = Stack()
        if args.command == "up":
            services.up(stack)
            summary.print_up(stack)
        elif args.command == "run":
            return demo.run(stack)
        elif args.command == "down":
            services.down(stack)
        elif args.command == "logs":
            summary.print_logs(stack)
        elif args.command == "env":
            summary.print_env(stack)
        elif args.command == "status":
            summary.print_status(stack, {name: service_pid(stack, name) for name in (*stack.services, "mlflow")})
    except StackError as exc:
        log.error("%s", exc)
        return 2
    return 0
