"""What a Redis Cluster node says about the cluster: CLUSTER NODES and CLUSTER INFO."""

from __future__ import annotations

from dataclasses import dataclass

SLOTS = 16384


@dataclass(frozen=True)
class NodeInfo:
    """One node as the cluster sees it (a line of CLUSTER NODES)."""

    node_id: str
    host: str
    port: int
    role: str  # "master" or "replica"
    master_id: str | None  # the master of a replica
    slots: tuple[tuple[int, int], ...]  # inclusive ranges
    failed: bool  # flagged fail or fail? by the node that was asked

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def parse_cluster_nodes(text: str) -> list[NodeInfo]:
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        node_id, address, flags, master = fields[:4]
        slot_fields = fields[8:]
        host_port = address.split("@")[0]
        host, port = host_port.rsplit(":", 1)
        flag_set = set(flags.split(","))
        slots = []
        for field in slot_fields:
            if field.startswith("["):  # a slot being imported or migrated
                continue
            first, _, last = field.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(
            NodeInfo(
                node_id=node_id,
                host=host,
                port=int(port),
                role="master" if "master" in flag_set else "replica",
                master_id=None if master == "-" else master,
                slots=tuple(sorted(slots)),
                failed=bool(flag_set & {"fail", "fail?"}),
            )
        )
    return sorted(nodes, key=lambda n: n.port)


def parse_cluster_info(text: str) -> dict[str, str]:
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {name: value.strip() for name, value in fields}
