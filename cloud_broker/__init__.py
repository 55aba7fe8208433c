"""cloud_broker: the cloud side of edgestream, in rooms with one job each.

- ``storage/``  the partitions: the store interface and its shared_log implementation
- ``ingest/``   edge batches into partitions exactly once (framing, partitioner, state)
- ``groups/``   consumer groups: the state machine, its coordinator and its database
- ``mirrors/``  replication of partitions to other brokers, NATS JetStream, SQL
- ``http/``     the HTTP API (the only room importing Starlette): one module per resource
- ``client/``   the Python consumer client (``Consumer``, ``BrokerClient``)
- ``broker``    the ``Broker`` service object every handler is given
- ``auth``, ``trust``   tokens and scopes; who may write where
- ``errors``    ``Problem``, the one refusal type of every handler
- ``record_codec``      the consumer wire format (server and client)
- ``config``, ``netaddr``, ``redact``, ``datadir``, ``startup``, ``metrics``, ``cli``
  process plumbing

docs/architecture.md walks one reading from an edge to a consumer through these rooms.
"""
