"""The ``celery multi`` command line built from the topology."""

from __future__ import annotations

from pathlib import Path

from celery.utils.nodenames import gethostname, host_format

from routing_demo.workers import WorkerGroup, worker_nodes


def test_when_group_started_then_multi_gets_one_selection_per_node(tmp_path: Path) -> None:
    group = WorkerGroup(worker_nodes(suffix="-t"), tmp_path, worker_options=["-c", "2"])
    argv = group.multi_argv("start")
    multi = argv[argv.index("multi") :]
    assert multi[:5] == ["multi", "start", "add-t", "sub-t", "default-t"]
    for option, value in (("-X:default-t", "add,sub"), ("-Q:add-t", "add"), ("-Q:sub-t", "sub")):
        assert multi[multi.index(option) + 1] == value
    assert f"--pidfile={tmp_path}/%n.pid" in multi
    assert f"--logfile={tmp_path}/%n.log" in multi
    assert multi[-2:] == ["-c", "2"]
    assert argv[argv.index("-A") + 1] == "routing_demo"


def test_when_node_named_then_hostname_is_name_at_host() -> None:
    node = worker_nodes(suffix="-x")[0]
    name, _, host = node.hostname.partition("@")
    assert name == "add-x"
    assert host == gethostname()
    # The name a worker started with ``-n add-x@%h`` reports, as Celery expands it.
    assert node.hostname == host_format("add-x@%h")


def test_when_group_started_then_each_node_keeps_revokes_in_a_file_and_sends_events_if_asked(
    tmp_path: Path,
) -> None:
    nodes = worker_nodes(suffix="-t")
    argv = WorkerGroup(nodes, tmp_path).multi_argv("start")
    assert f"--statedb={tmp_path}/%n.state" in argv
    assert "--events" not in argv  # as in Celery: they cost three messages per task
    assert WorkerGroup(nodes, tmp_path).state_path(nodes[0]) == tmp_path / "add-t.state"
    loud = WorkerGroup(nodes, tmp_path, events=True).multi_argv("start")
    assert "--events" in loud
    assert f"--statedb={tmp_path}/%n.state" in loud
