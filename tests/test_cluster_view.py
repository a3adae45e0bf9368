from __future__ import annotations

from gifting_server.cluster_view import NodeInfo, parse_cluster_info, parse_cluster_nodes

NODES = """\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail - 0 1426238318243 3 disconnected
e7d1 127.0.0.1:30001@40001,host-a myself,master - 0 0 1 connected 0-5460 10923-16383 [93->-292f]
"""


def test_cluster_nodes_lines_become_nodes_sorted_by_port() -> None:
    assert parse_cluster_nodes(NODES) == [
        NodeInfo("e7d1", "127.0.0.1", 30001, "master", None, ((0, 5460), (10923, 16383)), False),
        NodeInfo("67ed", "127.0.0.1", 30002, "master", None, ((5461, 10922),), False),
        NodeInfo("292f", "127.0.0.1", 30003, "master", None, (), True),
        NodeInfo("07c3", "127.0.0.1", 30004, "replica", "e7d1", (), False),
    ]


def test_a_node_serves_the_slots_of_its_ranges() -> None:
    first = parse_cluster_nodes(NODES)[0]
    assert first.serves(0) and first.serves(16383) and not first.serves(5461)
    assert first.url == "redis://127.0.0.1:30001"


def test_cluster_info_lines_become_fields() -> None:
    info = parse_cluster_info("cluster_state:ok\r\ncluster_slots_ok:16384\r\n")
    assert info == {"cluster_state": "ok", "cluster_slots_ok": "16384"}
