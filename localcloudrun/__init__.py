"""A local Cloud Run Admin API v2 (REST/JSON) for tests of what services and jobs deploy.

Only the read calls the pruner makes are served: services, revisions and jobs, listed or got.

```
with CloudRunServer() as run:
    run.add_service("proj", "us-central1", "web",
                    [{"image": "us-docker.pkg.dev/proj/apps/web:v1", "digest": "sha256:…"}])
    run.add_job("proj", "us-central1", "migrate", image="us-docker.pkg.dev/proj/apps/web:v1")
    # GET {run.url}/v2/projects/proj/locations/us-central1/services with "Bearer <any token>"
```
"""

from localcloudrun.resources import LATEST, REGIONS
from localcloudrun.server import ApiError, CloudRunServer, RequestRecord

__all__ = ["LATEST", "REGIONS", "ApiError", "CloudRunServer", "RequestRecord"]
