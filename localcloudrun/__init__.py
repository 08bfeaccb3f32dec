"""A local Cloud Run Admin API v2 (REST/JSON) for tests of what services and jobs deploy.

Only the read calls the pruner makes are served: services, revisions and jobs, listed or got.
"""

from localcloudrun.resources import LATEST, REGIONS
from localcloudrun.server import ApiError, CloudRunServer, RequestRecord

__all__ = ["LATEST", "REGIONS", "ApiError", "CloudRunServer", "RequestRecord"]
