#!/usr/bin/env python3
"""A downstream service reading touchstream's derived events.

Subscribes to the per-type output topics (``<prefix><type>``, e.g.
``cx.cart_abandoned``) with confluent-kafka, decodes each value from the
Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro
datum) with fastavro, and prints one JSON object per event on stdout -- the
same shape as ``touchstream replay``'s lines (timestamps as epoch millis,
enums as their symbols, optional fields as their value or null).

Writer schemas are looked up by the id in each frame:
  * with ``--registry URL``: from a Confluent-compatible schema registry
    (``GET /schemas/ids/{id}``), cached;
  * otherwise: from the ``.avsc`` files in ``--schemas`` under touchstream's
    default ids (101..109 in the order of the derived-event table:
    engagement_score=101 ... order_attributed=108, customer_value=109).

touchstream delivers at least once by default: after a crash it may send an
event again, byte-identical and with the same ``event_id`` (also in the
record header ``event_id``). ``--dedupe`` drops such repeats, as an
idempotent consumer would. Reads use ``isolation.level=read_committed``, so
with ``delivery = "exactly_once"`` aborted transactions are never seen.

Example:
    python examples/consume.py --bootstrap 127.0.0.1:9092 --prefix cx. \\
        --group my-dashboard --schemas schemas --max-idle 10

Requires: pip install confluent-kafka fastavro ("confluent-kafka[avro,schemaregistry]" for --confluent-deserializer)
"""
import argparse
import datetime
import io
import json
import os
import struct
import sys
import time
import urllib.request

import fastavro
from confluent_kafka import Consumer, KafkaError

TYPES = [
    "engagement_score",
    "cart_abandoned",
    "cart_recovered",
    "churn_risk",
    "journey_stage_changed",
    "survey_trigger",
    "contact_fatigue",
    "order_attributed",
    "customer_value",
]
DEFAULT_ID_BASE = 101
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
ONE_MS = datetime.timedelta(milliseconds=1)


def log(msg):
    print(f"consume.py: {msg}", file=sys.stderr, flush=True)


class Schemas:
    """Writer schemas by Confluent schema id."""

    def __init__(self, schemas_dir, registry):
        self.registry = registry.rstrip("/") if registry else None
        self.cache = {}
        if self.registry is None:
            for i, t in enumerate(TYPES):
                path = os.path.join(schemas_dir, f"{t}.avsc")
                with open(path, encoding="utf-8") as f:
                    self.cache[DEFAULT_ID_BASE + i] = fastavro.parse_schema(json.load(f))

    def get(self, schema_id):
        if schema_id in self.cache:
            return self.cache[schema_id]
        if self.registry is None:
            raise KeyError(f"schema id {schema_id} is not one of touchstream's default ids (use --registry)")
        url = f"{self.registry}/schemas/ids/{schema_id}"
        req = urllib.request.Request(url, headers={"Accept": "application/vnd.schemaregistry.v1+json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.load(resp)
        schema = fastavro.parse_schema(json.loads(body["schema"]))
        self.cache[schema_id] = schema
        return schema


def plain(v):
    """Avro-decoded values as replay prints them (datetimes -> epoch millis)."""
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return (v - EPOCH) // ONE_MS
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def decode(schemas, value):
    if value is None or len(value) < 5 or value[0] != 0:
        raise ValueError("not in the Confluent wire format")
    (schema_id,) = struct.unpack(">I", value[1:5])
    schema = schemas.get(schema_id)
    buf = io.BytesIO(value[5:])
    event = fastavro.schemaless_reader(buf, schema)
    if buf.tell() != len(value) - 5:
        raise ValueError(f"{len(value) - 5 - buf.tell()} trailing bytes after the datum")
    return plain(event)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default="localhost:9092", help="Kafka bootstrap servers")
    ap.add_argument("--prefix", default="cx.", help="output topic prefix (touchstream's kafka.output_topic_prefix)")
    ap.add_argument("--group", default="touchstream-consume-example", help="consumer group id")
    ap.add_argument("--schemas", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "schemas"),
                    help="directory with the derived-event .avsc files (used without --registry)")
    ap.add_argument("--registry", default=None, help="Confluent-compatible schema registry URL")
    ap.add_argument("--confluent-deserializer", action="store_true",
                    help="with --registry: decode with confluent-kafka's own AvroDeserializer "
                         "(SchemaRegistryClient), as a typical downstream service does")
    ap.add_argument("--max-idle", type=float, default=None,
                    help="exit after this many seconds without a new event (default: run forever)")
    ap.add_argument("--dedupe", action="store_true", help="drop events whose event_id was already printed")
    ap.add_argument("--from-latest", action="store_true", help="start at the end of the topics, not the beginning")
    ap.add_argument("-X", action="append", default=[], metavar="KEY=VALUE",
                    help="extra librdkafka setting (e.g. -X security.protocol=SASL_SSL)")
    args = ap.parse_args()

    schemas = Schemas(args.schemas, args.registry)
    deserialize = None
    if args.confluent_deserializer:
        if not args.registry:
            log("--confluent-deserializer needs --registry")
            return 2
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        avro_deserializer = AvroDeserializer(SchemaRegistryClient({"url": args.registry}))

        def deserialize(msg):
            ctx = SerializationContext(msg.topic(), MessageField.VALUE)
            return plain(avro_deserializer(msg.value(), ctx))
    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "latest" if args.from_latest else "earliest",
        "isolation.level": "read_committed",
        "enable.auto.commit": True,
        "log_level": 3,
    }
    for kv in args.X:
        k, _, v = kv.partition("=")
        conf[k] = v
    consumer = Consumer(conf)
    assigned_at = []

    def on_assign(c, partitions):
        if not assigned_at:
            assigned_at.append(time.monotonic())

    topics = [args.prefix + t for t in TYPES]
    consumer.subscribe(topics, on_assign=on_assign)
    seen = set()
    last = None
    started = time.monotonic()
    printed = 0
    out = sys.stdout
    try:
        while True:
            msg = consumer.poll(0.5)
            now = time.monotonic()
            if msg is None:
                if args.max_idle is not None:
                    since = last if last is not None else (assigned_at[0] if assigned_at else None)
                    if since is not None and now - since >= args.max_idle:
                        break
                    if since is None and now - started > max(60.0, args.max_idle):
                        log("no partitions assigned after 60 s")
                        return 2
                continue
            if msg.error():
                if msg.error().code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    continue
                log(f"consumer error: {msg.error()}")
                continue
            last = now
            try:
                event = deserialize(msg) if deserialize else decode(schemas, msg.value())
            except Exception as e:  # a bad record must not stop a consumer
                log(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: cannot decode: {e}")
                continue
            if args.dedupe:
                eid = event.get("event_id")
                if eid in seen:
                    continue
                seen.add(eid)
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            out.flush()
            printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    log(f"{printed} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
