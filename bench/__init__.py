"""The benchmark: ``python -m bench`` (``make bench``) measures cleaner against the local
registry, with injected latency and quota, and prints each figure beside its target.

- Big prune: a cold instance prunes 2,000 images (1,990 to delete) at 30 ms a request; its wall
  time against the ideal for the same concurrency (``bench.ideal`` says how that is derived),
  and its requests, kind by kind, against the minimum.
- Warm no-op: a second message for an unchanged repository costs one request.
- Burst: 50 messages for one repository in two seconds cause at most 3 full listings.
- Cold start: ``import main`` against the three libraries it needs, in fresh processes.
- Scale: planning 10,000 and 100,000 images: peak memory, and time growing linearly.
- Quota: sustained throughput against a local quota that answers 429, with nothing lost.
- Versus: the old Node script's batches of three, replayed on the same repository.

Figures are measured here, never asserted in timed tests; ``tests/test_bench_smoke.py`` runs
the same code at tiny sizes. Everything stays on loopback.
"""
