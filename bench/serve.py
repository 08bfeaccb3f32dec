"""``python -m bench.serve [localregistry options]``: the local registry for the benchmark.

It is ``python -m localregistry`` with a longer listen queue. The emulator's ThreadingHTTPServer
keeps socketserver's default of 5 pending connections; when a client opens more than that at
once (a prune with 64 workers does), the kernel drops the extra SYNs and each of those
connections waits a full second for the retransmit: the benchmark would measure the emulator's
accept queue instead of the pruner. Google's front end has no such limit.
"""

from __future__ import annotations

import sys

from localregistry import server
from localregistry.__main__ import main

LISTEN_QUEUE = 256

if __name__ == "__main__":
    server._HTTPServer.request_queue_size = LISTEN_QUEUE
    sys.exit(main(sys.argv[1:]))
