"""The benchmark's code paths at tiny sizes: every figure comes out with a value, a target and a
verdict. Nothing here asserts a timing; ``python -m bench`` measures, at full size."""

from __future__ import annotations

import pytest

from bench import ideal
from bench.__main__ import NAMES, run
from bench.registry import kind_of
from bench.sizes import SMOKE

EXPECTED = {
    "Big prune: wall / ideal",
    "Requests: actual vs minimum",
    "Warm no-op: requests",
    "Burst: full listings",
    "Cold start: import main / libraries",
    "Scale: peak memory at 3,000 images",
    "Scale: planning time 10× the images",
    "Quota: sustained throughput",
    "Versus the old script's batches of 3",
}


@pytest.fixture(scope="module")
def figures():
    return run(SMOKE, progress=lambda _: None)


def test_every_figure_comes_out_with_its_target_and_verdict(figures):
    assert {f.name for f in figures} == EXPECTED
    for figure in figures:
        assert figure.value and figure.target, figure.name
        assert figure.verdict in ("PASS", "FAIL")
        assert figure.data, figure.name


def test_the_figures_that_do_not_depend_on_timing_are_met(figures):
    by_name = {f.name: f for f in figures}
    requests = by_name["Requests: actual vs minimum"].data
    assert requests["actual"] == requests["minimum"]
    assert by_name["Warm no-op: requests"].data["requests"] == 1
    assert by_name["Quota: sustained throughput"].data["failed"] == 0
    assert by_name["Big prune: wall / ideal"].data["complete"]
    assert by_name["Cold start: import main / libraries"].data["heavy"] == []


def test_only_runs_the_chosen_figures():
    figures = run(SMOKE, only={"warm"}, progress=lambda _: None)
    assert [f.name for f in figures] == ["Warm no-op: requests"]
    assert set(NAMES) >= {"big", "versus"}


def chain_and_fan(chain: int, fan: int) -> ideal.Graph:
    graph = ideal.Graph()
    previous = graph.add("a")
    for _ in range(chain - 1):
        previous = graph.add("a", [previous])
    for _ in range(fan):
        graph.add("b")
    return graph


@pytest.mark.parametrize(
    ("chain", "fan", "workers", "waves"),
    [
        (4, 0, 8, 4),  # a chain takes one wave a link, whatever the workers
        (1, 63, 8, 8),  # 64 independent requests on 8 workers
        (4, 28, 8, 4),  # the fan fills the spare workers beside the chain
        (4, 29, 8, 5),  # one request too many
    ],
    ids=["chain", "fan", "fan beside chain", "one too many"],
)
def test_waves_are_the_optimum_of_small_graphs(chain, fan, workers, waves):
    found = ideal.waves(chain_and_fan(chain, fan), workers)
    assert (found.lower, found.achieved) == (waves, waves)
    assert len(found.longest_chain) == chain


def test_kinds_follow_the_registry_api():
    def entry(method, path):
        return {"method": method, "path": path}

    d = "sha256:" + "a" * 64
    assert kind_of(entry("GET", "/v2/")) == "challenge"
    assert kind_of(entry("GET", "/v2/token")) == "token"
    assert kind_of(entry("GET", "/v2/p/app/tags/list")) == "list"
    assert kind_of(entry("GET", f"/v2/p/app/manifests/{d}")) == "manifest"
    assert kind_of(entry("HEAD", "/v2/p/app/manifests/v1")) == "tag-check"
    assert kind_of(entry("DELETE", "/v2/p/app/manifests/v1")) == "tag-delete"
    assert kind_of(entry("DELETE", f"/v2/p/app/manifests/{d}")) == "digest-delete"
