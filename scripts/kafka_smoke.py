#!/usr/bin/env python3
"""Smoke check of the test Kafka broker (see scripts/kafka), without cargo.

Over PLAINTEXT: create a topic, produce and consume one record, run a
transaction (init/begin/produce/commit) and read it back read_committed.
Over SASL_SSL (unless --no-sasl): connect with PLAIN (alice) and with
SCRAM-SHA-512 (scram-user), verifying the broker certificate against
.kafka/tls/ca.pem, and confirm that wrong credentials are refused.

Needs confluent-kafka (scripts/test installs it into .venv). Exit 0 on
success; prints what failed and exits 1 otherwise.
"""
import argparse
import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = {"log_level": 0 if os.environ.get("KAFKA_SMOKE_VERBOSE") is None else 6}


def step(msg):
    print(f"kafka-smoke: {msg}", flush=True)


def fail(msg):
    print(f"kafka-smoke: FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def create_topic(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    futs = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                               operation_timeout=30, request_timeout=30)
    futs[topic].result(timeout=60)
    # Wait until the metadata shows a leader for the partition.
    deadline = time.time() + 30
    while time.time() < deadline:
        md = admin.list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions and \
                all(p.leader >= 0 for p in t.partitions.values()):
            return
        time.sleep(0.2)
    fail(f"topic {topic} has no leader after 30 s")


def produce(conf, topic, key, value, transactional=False):
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    p = Producer({**conf, **QUIET})
    if transactional:
        p.init_transactions(60)
        p.begin_transaction()
        p.produce(topic, key=key, value=value, on_delivery=on_delivery)
        p.commit_transaction(60)
    else:
        p.produce(topic, key=key, value=value, on_delivery=on_delivery)
    remaining = p.flush(60)
    if remaining or errors:
        fail(f"produce to {topic} failed: remaining={remaining} errors={errors}")


def consume_one(conf, topic, expect_value, timeout=60):
    c = Consumer({**conf, **QUIET,
                  "group.id": f"smoke-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest",
                  "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    try:
        c.subscribe([topic])
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                fail(f"consume from {topic}: {m.error()}")
            if m.value() == expect_value:
                return
            fail(f"consume from {topic}: got {m.value()!r}, want {expect_value!r}")
        fail(f"no record consumed from {topic} within {timeout} s")
    finally:
        c.close()


def sasl_conf(sasl_bootstrap, ca, mechanism, user, password):
    return {"bootstrap.servers": sasl_bootstrap,
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": ca,
            "sasl.mechanism": mechanism,
            "sasl.username": user,
            "sasl.password": password}


def expect_auth_failure(conf, label, timeout=20):
    """librdkafka connects to the bootstrap broker at once and reports a
    refused login through error_cb; a metadata request must not succeed."""
    errs = []
    p = Producer({**conf, **QUIET, "error_cb": errs.append})
    deadline = time.time() + timeout
    while time.time() < deadline:
        p.poll(0.2)
        if any(e.code() == KafkaError._AUTHENTICATION for e in errs):
            break
    else:
        fail(f"{label}: no authentication error within {timeout} s, got {[str(e) for e in errs]}")
    try:
        p.list_topics(timeout=2)
    except KafkaException:
        pass
    else:
        fail(f"{label}: metadata request succeeded with wrong credentials")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--sasl-bootstrap", default="127.0.0.1:9094")
    ap.add_argument("--ca", default=os.path.join(REPO, ".kafka", "tls", "ca.pem"))
    ap.add_argument("--no-sasl", action="store_true", help="skip the SASL_SSL checks")
    args = ap.parse_args()

    t0 = time.time()
    plain = {"bootstrap.servers": args.bootstrap}
    run = uuid.uuid4().hex[:8]

    topic = f"smoke-{run}"
    step(f"PLAINTEXT {args.bootstrap}: create topic {topic}")
    create_topic(args.bootstrap, topic)
    produce(plain, topic, b"k", b"hello")
    consume_one(plain, topic, b"hello")
    step("PLAINTEXT: produced and consumed one record")

    tx_topic = f"smoke-tx-{run}"
    create_topic(args.bootstrap, tx_topic)
    produce({**plain, "transactional.id": f"smoke-tx-{run}"}, tx_topic, b"k", b"committed",
            transactional=True)
    consume_one(plain, tx_topic, b"committed")
    step("PLAINTEXT: transaction committed and read back read_committed")

    if not args.no_sasl:
        if not os.path.isfile(args.ca):
            fail(f"CA file {args.ca} missing")
        for mech, user, pw in (("PLAIN", "alice", "alice-secret"),
                               ("SCRAM-SHA-512", "scram-user", "scram-secret")):
            conf = sasl_conf(args.sasl_bootstrap, args.ca, mech, user, pw)
            stopic = f"smoke-{mech.lower()}-{run}"
            produce(conf, stopic, b"k", mech.encode())  # auto-created topic
            consume_one(conf, stopic, mech.encode())
            step(f"SASL_SSL {args.sasl_bootstrap} {mech} as {user}: produced and consumed")
            expect_auth_failure(sasl_conf(args.sasl_bootstrap, args.ca, mech, user, "wrong"),
                                f"{mech} wrong password")
            step(f"SASL_SSL {mech}: wrong password refused")
        expect_auth_failure(sasl_conf(args.sasl_bootstrap, args.ca, "PLAIN", "mallory", "x"),
                            "PLAIN unknown user")
        step("SASL_SSL PLAIN: unknown user refused")
        other_ca = "/etc/ssl/certs/ca-certificates.crt"  # trusts public CAs, not ours
        if os.path.isfile(other_ca):
            errs = []
            p = Producer({**sasl_conf(args.sasl_bootstrap, other_ca, "PLAIN", "alice",
                                      "alice-secret"), **QUIET, "error_cb": errs.append})
            deadline = time.time() + 20
            while time.time() < deadline and not any(e.code() == KafkaError._SSL for e in errs):
                p.poll(0.2)
            if not any(e.code() == KafkaError._SSL for e in errs):
                fail(f"broker certificate accepted without our CA: {[str(e) for e in errs]}")
            step("SASL_SSL: certificate rejected when .kafka/tls/ca.pem is not trusted")

    step(f"OK in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        fail(f"{e}")
