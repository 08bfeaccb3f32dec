"""Commands for operating cleaner beyond one push: sweep, trigger and drain.

- ``sweep`` prunes every repository below a prefix once: the backlog that pushes never reach.
- ``trigger`` publishes the message a push would, so a deployment can be checked without pushing.
- ``drain`` empties a pull subscription on ``gcr`` in batches, one prune per repository per
  batch, for registries that push too often for one prune per push.

Each command is a module here, with its flags; ``common`` holds what they share. All three reach
the registry through ``cleaner.wiring`` and show results through ``cleaner.report``; ``trigger``
and ``drain`` talk to Pub/Sub with google-cloud-pubsub, which honours ``PUBSUB_EMULATOR_HOST``
and is imported only when one of them runs.

``cleaner.operate.sweep``, ``.trigger`` and ``.drain`` are the modules, not their command
functions, so a name can be patched where the command reads it.
"""

from __future__ import annotations

from cleaner.operate import drain, sweep, trigger
from cleaner.operate.common import (
    Row,
    RuleSource,
    Status,
    prune_one,
    rule_source,
    summary_table,
    totals_line,
)
from cleaner.operate.sweep import Progress

__all__ = [
    "Progress",
    "Row",
    "RuleSource",
    "Status",
    "add_commands",
    "drain",
    "prune_one",
    "rule_source",
    "run",
    "summary_table",
    "sweep",
    "totals_line",
    "trigger",
]


def add_commands(sub, policy_flags, output_flags) -> None:
    sweep.add_command(sub, policy_flags, output_flags)
    trigger.add_command(sub)
    drain.add_command(sub, policy_flags, output_flags)


def run(args) -> int:
    commands = {"sweep": sweep.sweep, "trigger": trigger.trigger, "drain": drain.drain}
    return commands[args.command](args)
