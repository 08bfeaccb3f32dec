"""Application Default Credentials through the real google-auth code: a service-account key
file whose token endpoint is a loopback server, refreshed by google-auth's own requests transport.

(An authorized-user file would not do: google-auth always sends those to Google's own endpoint.)"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cleaner.errors import AuthError
from tests.harness import rule

ADC_TOKEN = "adc-issued-token-7d1f"


class _TokenEndpoint(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict]] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        type(self).seen.append({"path": self.path, "form": form})
        body = json.dumps(
            {"access_token": ADC_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def service_account(token_uri: str) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": "cleaner@test-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }


@pytest.fixture
def token_endpoint():
    _TokenEndpoint.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token", _TokenEndpoint.seen
    server.shutdown()
    server.server_close()


def test_adc_credentials_are_refreshed_by_google_auth_and_exchanged_at_the_realm(
    gcr, token_endpoint, tmp_path, monkeypatch
):
    url, seen = token_endpoint
    credentials = tmp_path / "adc.json"
    credentials.write_text(json.dumps(service_account(url)))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    gcr.load({"p/app": [{"name": "new", "uploaded": "-1d"}, {"name": "old", "uploaded": "-9d"}]})
    pruner = gcr.pruner(GOOGLE_OAUTH_ACCESS_TOKEN="")

    report = pruner.prune(gcr.repo(), rule(keep=1))

    assert report.ok and gcr.remaining() == ["new"]
    assert len(seen) == 1
    assert seen[0]["form"]["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = seen[0]["form"]["assertion"][0].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert claims["iss"] == "cleaner@test-project.iam.gserviceaccount.com"
    assert seen[0]["path"] == "/token"
    assert gcr.server.auth.access_tokens_seen == [ADC_TOKEN]


def test_no_credentials_at_all_is_a_clear_error_and_nothing_is_deleted(gcr, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no gcloud application-default file either
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent")
    gcr.load({"p/app": [{"name": "new", "uploaded": "-1d"}, {"name": "old", "uploaded": "-9d"}]})
    pruner = gcr.pruner(GOOGLE_OAUTH_ACCESS_TOKEN="")

    with pytest.raises(AuthError, match="GOOGLE_OAUTH_ACCESS_TOKEN"):
        pruner.prune(gcr.repo(), rule(keep=1))
    assert gcr.remaining() == ["new", "old"]
