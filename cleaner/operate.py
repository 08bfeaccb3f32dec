"""Commands for operating cleaner beyond one push: sweep, trigger and drain."""

from __future__ import annotations


def add_commands(sub, policy_flags, output_flags) -> None:
    """Registered by the command line; filled in as the commands land."""


def run(args) -> int:
    raise NotImplementedError(args.command)
