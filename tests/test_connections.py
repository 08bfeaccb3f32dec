"""The direct transport under cleaner.http, against loopback servers: TLS verified against the
CA bundle, keep-alive connections reused and replaced once the server dropped them, failures
raised as requests' exceptions, proxied origins left to requests; and the request rate that
cleaner.http learns from 429 answers, on a fake clock."""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import ssl
import subprocess
import threading
import time

import pytest

from cleaner import connections
from cleaner.errors import TransientError
from cleaner.http import Http, RequestRate


class Server:
    """Answers every GET with what it received; counts connections and requests."""

    def __init__(self, *, cert=None, drop_after_answer=False, delay_s=0.0):
        self.connections = 0
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                server.connections += 1
                super().setup()

            def do_GET(self):
                server.requests += 1
                time.sleep(delay_s)
                body = json.dumps(
                    {"path": self.path, "authorization": self.headers.get("Authorization")}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Link", '</v2/next?last=x>; rel="next"')
                self.end_headers()
                self.wfile.write(body)
                # Close without saying so, as a server's idle timeout does.
                self.close_connection = drop_after_answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A client that gave up (the timeout test) leaves the answer nowhere to go: not news.
        self.httpd.handle_error = lambda request, address: None
        scheme = "http"
        if cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*cert)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    started = []

    def start(**options):
        started.append(Server(**options))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate for 127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def trust(monkeypatch):
    """Make the next TLS context trust ``bundle`` (or the default bundle with None)."""

    def set_bundle(bundle):
        monkeypatch.setattr(connections, "_TLS", None)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        if bundle:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
        else:
            monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)

    return set_bundle


def quick_http(**options) -> Http:
    http = Http(backoff_s=0.001, **options)
    http.sleep = lambda _: None
    return http


def test_https_is_verified_against_the_ca_bundle(serve, certificate, trust):
    trust(certificate[0])
    server = serve(cert=certificate)
    answer = quick_http().send("GET", f"{server.url}/v2/", purpose="test")
    assert answer.status_code == 200
    assert answer.json()["path"] == "/v2/"


def test_a_certificate_no_bundle_vouches_for_is_refused(serve, certificate, trust):
    trust(None)
    server = serve(cert=certificate)
    with pytest.raises(TransientError, match="ConnectionError"):
        quick_http(retries=2).send("GET", f"{server.url}/v2/", purpose="test")
    assert server.requests == 0


def test_one_connection_serves_request_after_request(serve):
    server = serve()
    http = quick_http()
    for _ in range(5):
        assert http.send("GET", f"{server.url}/v2/", purpose="test").status_code == 200
    assert (server.connections, server.requests) == (1, 5)


def test_a_connection_the_server_dropped_is_replaced_without_a_retry(serve):
    server = serve(drop_after_answer=True)
    http = quick_http()
    waits = []
    http.sleep = waits.append
    for _ in range(3):
        assert http.send("GET", f"{server.url}/v2/", purpose="test").status_code == 200
        time.sleep(0.05)  # let the close reach the client
    assert (server.connections, server.requests, waits) == (3, 3, [])


def test_no_answer_in_time_is_a_read_timeout(serve):
    server = serve(delay_s=0.5)
    http = quick_http(retries=1)
    http.timeout = (0.1, 0.1)
    with pytest.raises(TransientError, match="ReadTimeout"):
        http.send("GET", f"{server.url}/v2/", purpose="test")


def test_parameters_credentials_and_links_reach_and_come_back(serve):
    server = serve()
    answer = quick_http().send(
        "GET",
        f"{server.url}/v2/token?a=1",
        purpose="test",
        params={"scope": "repository:p/app:pull,push"},
        auth=("oauth2accesstoken", "secret"),
    )
    body = answer.json()
    assert body["path"] == "/v2/token?a=1&scope=repository%3Ap%2Fapp%3Apull%2Cpush"
    basic = base64.b64encode(b"oauth2accesstoken:secret").decode()
    assert body["authorization"] == f"Basic {basic}"
    assert answer.links["next"]["url"] == "/v2/next?last=x"
    assert answer.headers.get("content-type") == "application/json"


@pytest.mark.parametrize(("no_proxy", "direct"), [("", False), ("gcr.io", True)])
def test_an_origin_behind_a_proxy_is_left_to_requests(monkeypatch, no_proxy, direct):
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    origin = Http()._origin("https://gcr.io/v2/")  # decides only; nothing is sent
    assert (origin.pool is not None) == direct


# --- the request rate ----------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


def rate_after(passed: int, clock: Clock) -> RequestRate:
    rate = RequestRate(clock=clock, pause=clock.pause)
    for _ in range(passed):
        rate.passed()
        clock.now += 0.5 / max(1, passed)  # all within the last second
    return rate


def test_nothing_is_paced_before_a_refusal():
    clock = Clock()
    rate = rate_after(50, clock)
    for _ in range(10):
        rate.wait()
    assert (rate.rate, clock.pauses) == (None, [])


def test_a_refusal_paces_at_a_little_under_what_got_through():
    clock = Clock()
    rate = rate_after(50, clock)
    rate.refused()
    assert rate.rate == pytest.approx(50 * RequestRate.CUT)
    for _ in range(3):
        rate.wait()
    gap = 1 / rate.rate
    assert clock.pauses == pytest.approx([gap, 2 * gap])  # the first goes at once


def test_a_refusal_at_a_trickle_leaves_the_rate_alone():
    clock = Clock()
    rate = rate_after(3, clock)
    rate.refused()
    assert rate.rate is None


def test_the_refusals_of_one_burst_cut_once_and_the_rate_grows_back():
    clock = Clock()
    rate = rate_after(50, clock)
    rate.refused()
    first = rate.rate
    clock.now += 0.2
    rate.refused()
    assert rate.rate == first
    clock.now += 2.0
    rate.wait()
    assert rate.rate == pytest.approx(first * (1 + RequestRate.GROWTH * 2.2))
