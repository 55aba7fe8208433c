"""A librdkafka group member in its own process (killed with SIGKILL by the test): reads
and commits every message synchronously, printing ``ready`` once it has an assignment."""

import sys

from confluent_kafka import Consumer

bootstrap, group = sys.argv[1], sys.argv[2]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
              "auto.offset.reset": "earliest", "enable.auto.commit": False,
              "session.timeout.ms": 2000, "heartbeat.interval.ms": 300,
              "max.poll.interval.ms": 10000, "partition.assignment.strategy": "range"})
c.subscribe(["telemetry"])
said = False
while True:
    m = c.poll(0.2)
    if not said and c.assignment():
        print("ready", flush=True)
        said = True
    if m is not None and m.error() is None:
        c.commit(message=m, asynchronous=False)
