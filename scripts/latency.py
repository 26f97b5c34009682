#!/usr/bin/env python3
"""End-to-end latency of the service at a fixed rate (issue "service speed").

Produces JSON touchpoints of new customers at RATE records/s for SECONDS
into TOPIC, each with event time = its produce time, keyed by customer id
(murmur2), while reading the `engagement_score` events the service derives
from them (one per touchpoint) from PREFIX + "engagement_score". Latency of
an event = its broker timestamp (CreateTime, set when touchstream produced
it) − its `at` (the touchpoint's event time = when it was produced here).
Visibility of an event = when this script's reader received it − its
`at`: the reader is `read_committed` (librdkafka's default), so under
exactly_once this is when a downstream service can see the event (after
the transaction that holds it commits). Prints p50, p90, p99, p999 and the
share over 50 ms of both, for the events whose touchpoint was produced
after a warm-up of 5 s, and the rate the producer reached.

  scripts/latency.py BROKERS TOPIC PREFIX RATE SECONDS

Start `touchstream run` (JSON input, `TOPIC` in input_topics, Avro
outputs) first; scripts/load-latency does both. Needs confluent-kafka and
fastavro (the project venv).
"""
import io
import json
import struct
import sys
import threading
import time

import fastavro
from confluent_kafka import Consumer, Producer

brokers, topic, prefix, rate, seconds = sys.argv[1:6]
rate, seconds = int(rate), float(seconds)
WARMUP_MS = 5000
schema = fastavro.parse_schema(
    json.load(open(__file__.rsplit("/", 2)[0] + "/schemas/engagement_score.avsc")))

lat = []
seen = []
stop = threading.Event()
t_start = int(time.time() * 1000)


def consume():
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"latency-{t_start}",
                  "auto.offset.reset": "latest", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "fetch.wait.max.ms": 10})
    c.subscribe([prefix + "engagement_score"])
    quiet_since = None
    while True:
        m = c.poll(0.2)
        if m is None:
            if stop.is_set():
                quiet_since = quiet_since or time.time()
                if time.time() - quiet_since > 3:
                    break
            continue
        if m.error():
            continue
        received = time.time()
        quiet_since = None
        v = m.value()
        ev = fastavro.schemaless_reader(io.BytesIO(v[5:]), schema)
        at = ev["at"]
        if not isinstance(at, int):  # fastavro reads timestamp-millis as a datetime
            at = round(at.timestamp() * 1000)
        if at >= t_start + WARMUP_MS:
            lat.append(m.timestamp()[1] - at)
            seen.append(int(received * 1000) - at)
    c.close()


th = threading.Thread(target=consume)
th.start()
time.sleep(3)  # the consumer joins and sits at the end
p = Producer({"bootstrap.servers": brokers, "partitioner": "murmur2_random", "linger.ms": 1})
n = 0
t0 = time.time()
t_start = int(t0 * 1000)
while time.time() - t0 < seconds:
    due = t0 + n / rate
    now = time.time()
    if due > now:
        time.sleep(min(due - now, 0.001))
        continue
    ms = int(now * 1000)
    cust = f"lat-{t_start}-{n}"
    tp = {"event_id": f"{cust}-0", "customer_id": cust, "channel": "web", "type": "page_view",
          "timestamp": ms}
    try:
        p.produce(topic, key=cust.encode(), value=json.dumps(tp).encode())
    except BufferError:
        p.poll(0.01)
        continue
    p.poll(0)
    n += 1
reached = n / (time.time() - t0)
p.flush()
stop.set()
th.join()
if not lat:
    sys.exit("no engagement_score events read")


def summary(xs):
    xs = sorted(xs)

    def pct(q):
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    over = sum(1 for x in xs if x > 50) / len(xs)
    return (f"p50 {pct(0.5)} ms, p90 {pct(0.9)} ms, p99 {pct(0.99)} ms, p999 {pct(0.999)} ms, "
            f"max {xs[-1]} ms; {100 * over:.1f} % over 50 ms")


print(f"{n} touchpoints at {rate}/s ({reached:.0f}/s reached) for {seconds:.0f} s; "
      f"{len(lat)} events after the warm-up: latency {summary(lat)}")
print(f"  seen by a read_committed reader: {summary(seen)}")
