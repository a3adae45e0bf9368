"""The cluster tests run on the session's local Redis Cluster: `redis_cluster` and
`cluster_url` live in tests/conftest.py, shared with every suite that runs on the
cluster (GIFTING_TEST_TOPOLOGY=cluster, tests/topology.py)."""
