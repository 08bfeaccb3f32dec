"""Run main.py under the real Functions Framework, as a subprocess on a free port, and send it
``gcr`` messages in each way Pub/Sub delivers them."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "//pubsub.googleapis.com/projects/p/topics/gcr"
SUBSCRIPTION = "projects/p/subscriptions/cleaner"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FunctionServer:
    def __init__(self, environ: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.environ = environ
        self.process: subprocess.Popen | None = None
        self.log_path = None

    def start(self) -> FunctionServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLEANER_")}
        env.update(self.environ)
        env["PYTHONPATH"] = str(ROOT)
        cli = Path(sys.executable).with_name("functions-framework")
        self.output = ROOT / ".pytest_cache" / f"function-{self.port}.log"
        self.output.parent.mkdir(exist_ok=True)
        self.log = open(self.output, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                str(cli),
                "--target=handle",
                f"--source={ROOT / 'main.py'}",
                "--host=127.0.0.1",
                f"--port={self.port}",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait()
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the function exited at start:\n{self.lines_text()}")
            try:
                requests.get(self.url, timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("the function did not start within 30 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()

    def lines_text(self) -> str:
        return self.output.read_text() if self.output.exists() else ""

    def logs(self) -> list[dict]:
        """The JSON log lines the function wrote (other lines are the framework's)."""
        entries = []
        for line in self.lines_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and "severity" in entry:
                    entries.append(entry)
        return entries

    def __enter__(self) -> FunctionServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- delivery modes ----------------------------------------------------------------

    def send(
        self,
        payload: dict | bytes | str,
        mode: str = "binary",
        *,
        message_id=None,
        published: str | None = None,
        snake_case: bool = False,
    ) -> requests.Response:
        message = pubsub_message(payload, message_id, published, snake_case)
        body = {"message": message, "subscription": SUBSCRIPTION}
        if mode == "binary":
            headers = ce_headers(message)
            return requests.post(self.url, json=body, headers=headers, timeout=60)
        if mode == "structured":
            event = {
                "specversion": "1.0",
                "id": message.get("messageId", "1"),
                "source": SOURCE,
                "type": "google.cloud.pubsub.topic.v1.messagePublished",
                "time": message.get("publishTime", now()),
                "datacontenttype": "application/json",
                "data": body,
            }
            return requests.post(
                self.url,
                data=json.dumps(event),
                timeout=60,
                headers={"Content-Type": "application/cloudevents+json"},
            )
        if mode == "push":
            return requests.post(self.url, json=body, timeout=60)
        raise ValueError(mode)


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def pubsub_message(payload, message_id=None, published=None, snake_case=False) -> dict:
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    message_id = message_id or str(uuid.uuid4().int)[:16]
    published = published or now()
    message = {"data": base64.b64encode(payload).decode(), "attributes": {}}
    if snake_case:
        message.update(message_id=message_id, publish_time=published)
    else:
        message.update(messageId=message_id, publishTime=published)
    return message


def ce_headers(message: dict) -> dict:
    return {
        "ce-id": message.get("messageId") or message.get("message_id") or "1",
        "ce-source": SOURCE,
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-time": message.get("publishTime") or message.get("publish_time") or now(),
        "Content-Type": "application/json",
    }
