"""The main job, end to end on this machine: a CI push to a Jib-built repository, the `gcr`
message it causes, the function pruning the repository, and the repository before and after.

Everything runs on loopback: the local registry (answering like Container Registry), the
function under the real Functions Framework, and the message sent as Eventarc would send it.
"""

from __future__ import annotations

import base64
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
sys.path.insert(0, str(ROOT))

from localregistry import Registry, RegistryServer  # noqa: E402

POLICY = {
    "rules": [
        {
            "repository": "gcr.io/demo-project/app",
            "keep": 5,
            "keep_tags": ["latest", "v*"],
            "grace": "2h",
        }
    ]
}


def jib_repository() -> dict:
    """Twelve CI builds a day apart, a tagged release and a multi-arch image; every created
    time is 1970, as Jib writes it."""
    entries = [
        {
            "name": f"build-{n}",
            "tags": [f"build-{n}"],
            "uploaded": f"-{13 - n}d",
            "created": "1970",
            "size": 48_000_000 + n * 1000,
        }
        for n in range(1, 13)
    ]
    entries[2]["tags"].append("v1.2.0")
    entries += [
        {
            "name": "amd64",
            "platform": "linux/amd64",
            "uploaded": "-20d",
            "created": "1970",
            "size": 51_000_000,
        },
        {
            "name": "arm64",
            "platform": "linux/arm64",
            "uploaded": "-20d",
            "created": "1970",
            "size": 49_000_000,
        },
        {
            "name": "multi",
            "kind": "index",
            "children": ["amd64", "arm64"],
            "tags": ["latest"],
            "uploaded": "-20d",
        },
        {"name": "old-pr", "uploaded": "-30d", "created": "1970", "size": 47_000_000},
    ]
    return {"host": "gcr.io", "style": "gcr", "repositories": {"demo-project/app": entries}}


def show(registry: Registry, title: str, names: dict[str, str]) -> None:
    now_ms = registry.now_ms()
    print(f"\n{title}: gcr.io/demo-project/app")
    print(f"  {'IMAGE':<10} {'DIGEST':<14} {'TAGS':<20} {'UPLOADED':<10} {'CREATED':<11} KIND")
    rows = sorted(
        registry.snapshot("demo-project/app").items(), key=lambda item: -item[1]["uploaded_ms"]
    )
    for digest, entry in rows:
        days = (now_ms - entry["uploaded_ms"]) / 86_400_000
        if days >= 1:
            uploaded = f"{days:.0f}d ago"
        elif days * 24 >= 1:
            uploaded = f"{days * 24:.0f}h ago"
        else:
            uploaded = f"{days * 1440:.0f}m ago"
        created = datetime.fromtimestamp(entry["created_ms"] / 1000, UTC).date().isoformat()
        tags = ", ".join(sorted(entry["tags"])) or "-"
        print(
            f"  {names.get(digest, 'new'):<10} {digest[7:19]:<14} {tags:<20} {uploaded:<10} "
            f"{created:<11} {entry['kind']}"
        )
    print(f"  ({len(rows)} manifests)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_function(registry_url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEANER_")}
    env.update(
        {
            "CLEANER_CONFIG": json.dumps(POLICY),
            "CLEANER_REGISTRY_ENDPOINTS": f"gcr.io={registry_url}",
            "GOOGLE_OAUTH_ACCESS_TOKEN": "demo-access-token",  # the local registry accepts any
            # No credentials lookup may leave the machine: aim the metadata server at a closed port.
            "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9",
            "NO_GCE_CHECK": "True",
            "PYTHONPATH": str(ROOT),
        }
    )
    cli = Path(sys.executable).with_name("functions-framework")
    process = subprocess.Popen(
        [
            str(cli),
            "--target=handle",
            f"--source={ROOT / 'main.py'}",
            "--host=127.0.0.1",
            f"--port={port}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    for _ in range(300):
        try:
            requests.get(url, timeout=1)
            return process, url
        except requests.ConnectionError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the function did not start:\n{process.stdout.read()}")


def push(registry_url: str) -> None:
    """What `docker push` / Jib does at the end: PUT a manifest under a new tag."""
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": "sha256:" + "c" * 64,
                "size": 1234,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": "sha256:" + uuid.uuid4().hex * 2,
                    "size": 48_100_000,
                }
            ],
        }
    ).encode()
    realm = f"{registry_url}/v2/token?service=gcr.io&scope=repository:demo-project/app:pull,push"
    token = requests.get(realm, auth=("oauth2accesstoken", "demo-access-token"), timeout=10)
    response = requests.put(
        f"{registry_url}/v2/demo-project/app/manifests/build-13",
        data=body,
        timeout=10,
        headers={
            "Authorization": f"Bearer {token.json()['token']}",
            "Content-Type": "application/vnd.docker.distribution.manifest.v2+json",
        },
    )
    response.raise_for_status()


def deliver(function_url: str, notification: dict) -> requests.Response:
    """Send the registry's notification the way Eventarc does: a binary-mode CloudEvent."""
    message_id = str(uuid.uuid4().int)[:16]
    published = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body = {
        "message": {
            "data": base64.b64encode(json.dumps(notification).encode()).decode(),
            "messageId": message_id,
            "publishTime": published,
            "attributes": {},
        },
        "subscription": "projects/demo-project/subscriptions/eventarc-cleaner",
    }
    headers = {
        "ce-id": message_id,
        "ce-specversion": "1.0",
        "ce-time": published,
        "ce-source": "//pubsub.googleapis.com/projects/demo-project/topics/gcr",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "Content-Type": "application/json",
    }
    return requests.post(function_url, json=body, headers=headers, timeout=120)


def main() -> int:
    registry = Registry(host="gcr.io", style="gcr")
    aliases = registry.load(jib_repository())
    names = {digest: alias for alias, digest in aliases.items()}
    with RegistryServer(registry, host="127.0.0.1", port=0) as server:
        print(f"Local registry (answers as gcr.io): {server.url}")
        print(f"Policy: {json.dumps(POLICY['rules'][0])}")
        show(registry, "Before", names)
        process, url = start_function(server.url)
        try:
            print(f"\nFunction: functions-framework --target=handle at {url}")
            registry.clear_notifications()
            push(server.url)
            (notification,) = [n for n in registry.clear_notifications() if n["action"] == "INSERT"]
            print(f"CI pushed build-13; the gcr topic carries: {json.dumps(notification)}")
            response = deliver(url, notification)
            print(f"The function answered HTTP {response.status_code} (200 acknowledges).")
            echoes = registry.clear_notifications()
            server.log.clear()
            echo = deliver(url, echoes[0])
            print(
                f"The prune made the registry publish {len(echoes)} DELETE notifications; "
                f"delivering one ({json.dumps(echoes[0])}) got HTTP {echo.status_code} and "
                f"{len(server.log.entries())} registry requests: only INSERT prunes."
            )
        finally:
            process.terminate()
            output = process.communicate(timeout=10)[0]
        print("\nFunction log (JSON lines, as Cloud Logging receives them):")
        for line in output.splitlines():
            if line.startswith("{") and '"severity"' in line:
                entry = json.loads(line)
                if entry["severity"] != "DEBUG":
                    print("  " + line)
        show(registry, "After", names)
    return 0 if response.status_code == 200 and echo.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
