"""A local Pub/Sub server speaking real gRPC, for tests that use `google-cloud-pubsub`.

Google's emulator ships only with the gcloud SDK; this one covers the calls the project's
clients make: topics, subscriptions, publish, pull, acknowledge, deadlines and streaming pull.
"""

from localpubsub.broker import Message, Pending
from localpubsub.server import PubSubServer

__all__ = ["Message", "Pending", "PubSubServer"]
