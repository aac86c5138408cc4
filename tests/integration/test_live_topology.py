"""Reloads and node failures under a steady load, with real router and node processes."""

from __future__ import annotations

import pytest

from tests.integration import chaos
from tests.integration.load import table

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.3


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    result = chaos.run(tmp_path_factory.mktemp("chaos"), phase_seconds=2.5,
                       timeout=f"{int(TIMEOUT_S * 1000)}ms")
    print("\n" + table(result.phases))
    return result


def test_no_request_ever_gets_a_wrong_value(report):
    assert {name: p.wrong for name, p in report.phases.items()} == {
        name: 0 for name in report.phases}


def test_adding_a_node_drops_no_request_and_moves_about_a_quarter(report):
    assert report.phases["add-node"].requests > 50
    assert report.phases["add-node"].errors == 0
    reply = report.facts["add_node_reply"]
    assert reply["applied"] is True and report.facts["digest_changed"]
    assert reply["nodes_added"] == ["node-3"]
    assert abs(reply["moved"] - 0.25) < 0.05


def test_an_invalid_topology_is_refused_and_the_ring_keeps_serving(report):
    status, body = report.facts["invalid_reply"]
    assert status == 400 and body["applied"] is False
    assert "default_group" in body["error"] and "nosuchgroup" in body["error"]
    assert report.facts["digest_kept"]
    config = report.facts["stats_config"]
    assert config["failures"] >= 1 and "nosuchgroup" in config["last_error"]
    assert report.phases["invalid-reload"].errors == 0


def test_after_kill_9_errors_stop_within_a_second(report):
    phase = report.phases["kill-9"]
    assert phase.requests > 50
    assert [t for t in phase.error_times if t > 1.0] == []


def test_a_restarted_node_is_taken_back(report):
    assert report.facts["restarted_up_after"] < 12
    assert report.phases["restart"].errors == 0


def test_a_hung_node_costs_at_most_the_timeout_then_is_served_around(report):
    phase = report.phases["sigstop"]
    assert report.facts["stopped_marked_down_after"] < 3.0
    # Every request is bounded by the router's timeout (twice for a set-then-get),
    # plus scheduling slack on a shared machine.
    assert max(phase.latencies) < 2 * TIMEOUT_S + 0.7
    # Once the node is marked down, nothing fails any more.
    late = [t for t in phase.error_times if t > report.facts["stopped_marked_down_after"] + 0.5]
    assert late == []


def test_a_continued_node_comes_back(report):
    assert report.facts["back_up_after"] < 12
    assert report.phases["sigcont"].errors == 0
