"""localregistry: a local registry that answers like Google's Container and Artifact Registry.

For tests and demos only; never deployed. Standard library only. It speaks the Docker Registry
HTTP API v2 with Google's extensions and refusals, over loopback.

Python API
----------
    from localregistry import Registry, RegistryServer, media

    reg = Registry(host="gcr.io", style="gcr")          # style "gcr" or "ar"
    d1 = reg.push_image("p/app", tags=["v1"], uploaded_ms=..., created_ms=0, size=1234,
                        platform="linux/amd64", media_type=media.DOCKER_MANIFEST, label="d1")
    att = reg.push_attestation("p/app", attests=d1)      # buildx attestation (unknown/unknown)
    i1 = reg.push_index("p/app", children=[d1, att], tags=["v2"], media_type=media.OCI_INDEX)
    sig = reg.push_cosign("p/app", subject=d1, kind="signature")   # tag sha256-<hex>.sig
    ref = reg.push_image("p/app", subject=d1, media_type=media.OCI_MANIFEST)  # OCI referrer
    aliases = reg.load(fixture_dict)                     # alias -> digest (see fixtures)
    reg.tag(repo, tag, digest); reg.untag(repo, tag); reg.delete(repo, ref, force=False)
    reg.add_stale_tag(repo, tag)    # listed in tags/list `tags`, but reading it is 404
    reg.snapshot(repo)              # {digest: {"tags", "media_type", "kind", "uploaded_ms",
                                    #   "created_ms", "size", "label", "platform", "children",
                                    #   "subject"}}
    reg.notifications               # what Google would publish on the `gcr` topic
    reg.on_notification = callback  # also called with each one, outside the registry lock

    with RegistryServer(reg, host="127.0.0.1", port=0) as srv:
        srv.url                     # "http://127.0.0.1:PORT"
        srv.faults.latency_ms = 30  # srv.faults: Faults, srv.auth: Auth, srv.log: RequestLog

Digests are the sha256 of the served manifest bytes. Every mutation of `Registry` raises
`RegistryError` (with `.status`, `.code`) for exactly what the HTTP API refuses, and takes
`notify=False` to publish nothing (fixture loading publishes nothing by default).

HTTP API (everything under /v2/ passes through faults and the request log)
--------------------------------------------------------------------------
GET /v2/                      401 + `WWW-Authenticate: Bearer realm="<url>/v2/token",
                              service="<host>"` (200 `{}` with any live token).
                              Options: `auth.omit_service`, `auth.realm`.
GET /v2/token?service=&scope=repository:PATH:pull,push
                              Basic auth, user `oauth2accesstoken` or `_token`, password a Google
                              access token (any non-empty one unless `auth.accepted_access_tokens`;
                              others 403 DENIED). Answers {"token", "expires_in"}
                              (`auth.token_field`: token | access_token | both). One scope per
                              token (more: 400 UNSUPPORTED); the token is good for that PATH only.
GET /v2/PATH/tags/list        Google's listing: name, tags, child, manifest{digest: imageSizeBytes,
                              layerId, mediaType, tag, timeCreatedMs, timeUploadedMs}.
                              gcr: numbers as strings, one page. ar: integers, `n` (default and
                              cap 1000) and `last` (the previous page's final digest), Link
                              `</v2/PATH/tags/list?n=N&last=DIGEST>; rel="next"` while more remain.
GET|HEAD /v2/PATH/manifests/REF   strict Accept (404 MANIFEST_UNKNOWN "Manifest has media type...").
PUT /v2/PATH/manifests/REF    201; Content-Type is the media type; index children must exist.
DELETE /v2/PATH/manifests/TAG      202, removes that tag only.
DELETE /v2/PATH/manifests/DIGEST   202; 400 GOOGLE_MANIFEST_DANGLING_TAG while tagged,
                              400 GOOGLE_MANIFEST_DANGLING_PARENT_IMAGE while an index lists it,
                              (400 GOOGLE_MANIFEST_REFERRING_MANIFEST with
                              `refuse_subject_delete`), 404 MANIFEST_UNKNOWN when absent.
GET /v2/PATH/blobs/DIGEST     404 BLOB_UNKNOWN (blobs are not stored).
Calls on a PATH need `Authorization: Bearer T`: none or expired gives 401 with a challenge that
adds `scope="repository:PATH:pull"` (`pull,push` for PUT/DELETE); a token for another path gives
401 "Requested repository does not match bearer token resource"; PUT/DELETE without push 403
DENIED; `auth.deny_deletes` makes DELETE 403 DENIED "Permission
'artifactregistry.repositories.deleteArtifacts' denied on resource ...".

Faults (srv.faults, in this order on every /v2 request)
-------------------------------------------------------
latency_ms; rules (first match wins: Rule(path=regex, method, status, code, message, times=1,
action="status"|"reset"|"delay", delay_s, retry_after), times -1 = forever); quota_rps (sliding
1 s window, 429 TOOMANYREQUESTS with Retry-After unless quota_retry_after=False); error_rate
(seeded by `seed`: 500 UNKNOWN, 502 HTML page, 503 UNAVAILABLE). Hooks: functions
(method, path, registry) in faults.before_hooks / faults.after_hooks (after runs before the answer
is sent). faults.injected counts what was injected. srv.log.entries(): method, path, query,
status (None for a reset), start, end, auth ("bearer" | "basic" | "other" | "none"), fault.
srv.auth.access_tokens_seen: every Basic password and unknown Bearer value received (Python only).
srv.auth.revoke_all(): every token issued so far expires now.

Control endpoints (no auth, no faults, not logged; JSON in and out)
-------------------------------------------------------------------
GET  /_emulator/state            settings, repositories (snapshots, stale tags), faults, auth
POST /_emulator/load[?notify=1]  body: a fixture -> {"aliases": {alias: digest}}
POST /_emulator/reset            empty everything; body may set host, style, page_order
GET|POST /_emulator/registry     host, style, page_order, refuse_subject_delete
GET|POST /_emulator/faults       latency_ms, quota_rps, quota_retry_after, error_rate, seed,
                                 rules (a list of rule objects, replacing the current ones)
GET|POST /_emulator/auth         expires_in, token_field, omit_service, realm, deny_deletes,
                                 accepted_access_tokens (list or null; reads back as a count)
POST /_emulator/revoke           expire every token now
GET|DELETE /_emulator/log        request log (DELETE clears)
GET|DELETE /_emulator/notifications   notifications (DELETE returns and clears them)
POST /_emulator/tag {repo, tag, digest} | /untag {repo, tag} | /delete {repo, ref, force}
     | /stale-tag {repo, tag}     direct changes; answer the repository snapshot

Command line: python -m localregistry --help
Example: python -m localregistry --port 5000 --load localregistry/examples/demo.json
"""

from localregistry import media
from localregistry.auth import Auth
from localregistry.errors import RegistryError
from localregistry.faults import Faults, RequestLog, Rule
from localregistry.fixtures import parse_time
from localregistry.server import RegistryServer
from localregistry.store import Registry

__all__ = [
    "Auth",
    "Faults",
    "Registry",
    "RegistryError",
    "RegistryServer",
    "RequestLog",
    "Rule",
    "media",
    "parse_time",
]
