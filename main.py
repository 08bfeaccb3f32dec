"""The Cloud Run function: every ``gcr`` topic message prunes the repository it names.

Deploy with entry point ``handle``; run locally with ``functions-framework --target=handle``.
The settings and policy are read and checked here, at start.
"""

import functions_framework

from cleaner import envelope
from cleaner.function import from_env

_function = from_env()
envelope.install()


@functions_framework.cloud_event
def handle(cloud_event) -> None:
    """Prune the pushed repository; return to acknowledge, raise to have Pub/Sub redeliver."""
    _function.handle(cloud_event)
