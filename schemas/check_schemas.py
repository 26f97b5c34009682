#!/usr/bin/env python3
"""Validate touchstream's Avro schemas (schemas/*.avsc).

Usage:  python3 check_schemas.py [SCHEMAS_DIR]     (needs `pip install fastavro`)

Checks, for every schema file:
  * it parses standalone with fastavro.parse_schema (no shared named types);
  * record name, namespace io.touchstream and the field names/order of the contract;
  * a `doc` on every record, field and enum;
  * shared enums have identical symbols in every file; every enum carries an
    Avro enum `default` except `Survey` inside the Touchpoint;
  * nullable fields are ["null", T] with "default": null;
  * timestamp fields are long/timestamp-millis;
  * one example record round-trips (schemaless writer -> reader);
and schema resolution:
  * a Touchpoint written with an extra Channel / TouchpointType symbol reads
    back as "other" with the reader schema;
  * a Touchpoint written with an unknown Survey symbol fails to decode;
  * a SurveyTrigger written with an extra Survey symbol reads back as "nps".

Exits 0 when everything passes, 1 otherwise.
"""
import copy
import datetime as dt
import io
import json
import os
import sys

try:
    import fastavro
except ImportError:  # pragma: no cover
    sys.exit("fastavro is required: pip install fastavro")

NS = "io.touchstream"

ENUMS = {
    "Channel": (["web", "mobile_app", "email", "sms", "push", "social", "store",
                 "call_center", "chat", "direct_mail", "loyalty", "other"], "other"),
    "TouchpointType": (["page_view", "product_view", "search", "add_to_cart",
                        "remove_from_cart", "checkout_started", "order_placed",
                        "order_returned", "app_open", "store_visit", "message_sent",
                        "message_opened", "message_clicked", "unsubscribed",
                        "support_contact", "support_resolved", "survey_response",
                        "loyalty_redeemed", "social_interaction", "other"], "other"),
    "Survey": (["nps", "csat", "ces"], "nps"),  # no default inside Touchpoint
    "ChurnLevel": (["low", "medium", "high"], "low"),
    "ChurnReason": (["p_alive", "inactive", "unsubscribed", "nps_detractor"], "p_alive"),
    "JourneyStage": (["awareness", "engagement", "transaction", "retention",
                      "at_risk"], "awareness"),
}

HEAD = ["type", "event_id", "customer_id", "at"]

# file -> (record name, field names in order, timestamp fields, nullable fields)
EXPECTED = {
    "touchpoint": ("Touchpoint",
                   ["event_id", "customer_id", "channel", "type", "timestamp", "value",
                    "currency", "cart_id", "order_id", "campaign_id", "session_id",
                    "survey", "score", "attributes"],
                   {"timestamp"},
                   {"value", "currency", "cart_id", "order_id", "campaign_id",
                    "session_id", "survey", "score"}),
    "engagement_score": ("EngagementScore", HEAD + ["score", "previous", "channels"],
                         {"at"}, {"previous"}),
    "cart_abandoned": ("CartAbandoned",
                       HEAD + ["cart_id", "cart_value", "currency", "channel",
                               "last_activity_at"],
                       {"at", "last_activity_at"}, {"cart_id", "currency"}),
    "cart_recovered": ("CartRecovered",
                       HEAD + ["cart_id", "order_id", "order_value", "abandoned_at"],
                       {"at", "abandoned_at"}, {"cart_id", "order_id", "order_value"}),
    "churn_risk": ("ChurnRisk",
                   HEAD + ["level", "previous_level", "p_alive", "days_inactive",
                           "reasons"],
                   {"at"}, {"p_alive", "days_inactive"}),
    "journey_stage_changed": ("JourneyStageChanged", HEAD + ["from", "to", "channel"],
                              {"at"}, {"from", "channel"}),
    "survey_trigger": ("SurveyTrigger",
                       HEAD + ["survey", "campaign_id", "channel", "clicked_at"],
                       {"at", "clicked_at"}, set()),
    "contact_fatigue": ("ContactFatigue", HEAD + ["messages_7d", "channels"],
                        {"at"}, set()),
    "order_attributed": ("OrderAttributed",
                         HEAD + ["order_id", "order_value", "currency", "channel",
                                 "models"],
                         {"at"}, {"order_id", "order_value", "currency"}),
    "customer_value": ("CustomerValue",
                       HEAD + ["orders", "total_spend", "average_order_value",
                               "expected_orders", "predicted_clv", "currency", "p_alive"],
                       {"at"}, {"average_order_value", "currency"}),
}

MODELS = ["last_touch", "first_touch", "linear", "time_decay", "position_based"]

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z

EXAMPLES = {
    "touchpoint": {
        "event_id": "e-1", "customer_id": "c-42", "channel": "web",
        "type": "survey_response", "timestamp": T0, "value": 12.5, "currency": "EUR",
        "cart_id": "cart-1", "order_id": None, "campaign_id": "camp-9",
        "session_id": "s-1", "survey": "nps", "score": 9,
        "attributes": {"utm_source": "newsletter"},
    },
    "engagement_score": {
        "type": "engagement_score", "event_id": "00000000-0000-5000-8000-000000000001",
        "customer_id": "c-42", "at": T0, "score": 42.25, "previous": None,
        "channels": ["email", "web"],
    },
    "cart_abandoned": {
        "type": "cart_abandoned", "event_id": "00000000-0000-5000-8000-000000000002",
        "customer_id": "c-42", "at": T0 + 3_600_000, "cart_id": None,
        "cart_value": 30.0, "currency": "USD", "channel": "mobile_app",
        "last_activity_at": T0,
    },
    "cart_recovered": {
        "type": "cart_recovered", "event_id": "00000000-0000-5000-8000-000000000003",
        "customer_id": "c-42", "at": T0 + 86_400_000, "cart_id": "cart-1",
        "order_id": "o-1", "order_value": 30.0, "abandoned_at": T0 + 3_600_000,
    },
    "churn_risk": {
        "type": "churn_risk", "event_id": "00000000-0000-5000-8000-000000000004",
        "customer_id": "c-42", "at": T0, "level": "high", "previous_level": "medium",
        "p_alive": 0.25, "days_inactive": 91, "reasons": ["p_alive", "inactive"],
    },
    "journey_stage_changed": {
        "type": "journey_stage_changed",
        "event_id": "00000000-0000-5000-8000-000000000005", "customer_id": "c-42",
        "at": T0, "from": None, "to": "awareness", "channel": "social",
    },
    "survey_trigger": {
        "type": "survey_trigger", "event_id": "00000000-0000-5000-8000-000000000006",
        "customer_id": "c-42", "at": T0 + 86_400_000, "survey": "nps",
        "campaign_id": "camp-9", "channel": "email", "clicked_at": T0,
    },
    "contact_fatigue": {
        "type": "contact_fatigue", "event_id": "00000000-0000-5000-8000-000000000007",
        "customer_id": "c-42", "at": T0, "messages_7d": 11,
        "channels": ["email", "push", "sms"],
    },
    "order_attributed": {
        "type": "order_attributed", "event_id": "00000000-0000-5000-8000-000000000008",
        "customer_id": "c-42", "at": T0, "order_id": "o-1", "order_value": 99.9,
        "currency": "EUR", "channel": "web",
        "models": {
            "last_touch": {"web": 1.0},
            "first_touch": {"email": 1.0},
            "linear": {"email": 0.5, "web": 0.5},
            "time_decay": {"email": 0.25, "web": 0.75},
            "position_based": {"email": 0.5, "web": 0.5},
        },
    },
    "customer_value": {
        "type": "customer_value", "event_id": "00000000-0000-5000-8000-000000000009",
        "customer_id": "c-42", "at": T0, "orders": 3, "total_spend": 120.5,
        "average_order_value": 40.166666666666664, "expected_orders": 1.25,
        "predicted_clv": 48.75, "currency": "EUR", "p_alive": 0.83,
    },
}

FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print("FAIL:", msg)


def parse(schema):
    """Parse standalone: a fresh named-type table each time."""
    return fastavro.parse_schema(copy.deepcopy(schema), named_schemas={})


def normalize(x):
    """Turn datetimes produced by the timestamp-millis reader back into millis."""
    if isinstance(x, dt.datetime):
        return int(round(x.timestamp() * 1000))
    if isinstance(x, dict):
        return {k: normalize(v) for k, v in x.items()}
    if isinstance(x, list):
        return [normalize(v) for v in x]
    return x


def roundtrip(writer, datum, reader=None):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, datum)
    buf.seek(0)
    out = fastavro.schemaless_reader(buf, writer, reader if reader is not None else writer)
    return normalize(out)


def walk(node, where, fname, in_touchpoint, seen_enums):
    """Check docs, namespaces and enums on a raw (unparsed) schema node."""
    if isinstance(node, list):
        for i, branch in enumerate(node):
            walk(branch, f"{where}[{i}]", fname, in_touchpoint, seen_enums)
        return
    if not isinstance(node, dict):
        return  # primitive or a reference to an already-defined name
    t = node.get("type")
    if t == "record":
        if not node.get("doc"):
            fail(f"{fname}: record {where} has no doc")
        if node.get("namespace") != NS:
            fail(f"{fname}: record {node.get('name')} namespace is not {NS}")
        for field in node.get("fields", []):
            fw = f"{node.get('name')}.{field.get('name')}"
            if not field.get("doc"):
                fail(f"{fname}: field {fw} has no doc")
            ft = field.get("type")
            if isinstance(ft, list):
                if ft[0] != "null" or len(ft) != 2:
                    fail(f"{fname}: field {fw} union is not [\"null\", T]")
                if "default" not in field or field["default"] is not None:
                    fail(f"{fname}: nullable field {fw} lacks \"default\": null")
            walk(ft, fw, fname, in_touchpoint, seen_enums)
    elif t == "enum":
        name = node.get("name")
        if not node.get("doc"):
            fail(f"{fname}: enum {name} has no doc")
        if node.get("namespace", NS) != NS:
            fail(f"{fname}: enum {name} namespace is not {NS}")
        if name not in ENUMS:
            fail(f"{fname}: unexpected enum {name}")
            return
        symbols, default = ENUMS[name]
        if node.get("symbols") != symbols:
            fail(f"{fname}: enum {name} symbols differ: {node.get('symbols')}")
        seen_enums.add(name)
        if name == "Survey" and in_touchpoint:
            if "default" in node:
                fail(f"{fname}: Survey in Touchpoint must have no enum default")
        elif node.get("default") != default:
            fail(f"{fname}: enum {name} default is {node.get('default')!r}, "
                 f"expected {default!r}")
    elif t == "array":
        walk(node.get("items"), where + "[]", fname, in_touchpoint, seen_enums)
    elif t == "map":
        walk(node.get("values"), where + "{}", fname, in_touchpoint, seen_enums)
    elif isinstance(t, (dict, list)):
        walk(t, where, fname, in_touchpoint, seen_enums)


def field_type(schema, name):
    for f in schema["fields"]:
        if f["name"] == name:
            return f["type"]
    return None


def check_file(dirpath, stem, raw_schemas):
    fname = f"{stem}.avsc"
    path = os.path.join(dirpath, fname)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{fname}: cannot load: {e}")
        return
    raw_schemas[stem] = raw
    try:
        parsed = parse(raw)
    except Exception as e:  # noqa: BLE001 - report any parser error
        fail(f"{fname}: parse_schema failed: {e}")
        return

    rec, fields, ts_fields, nullable = EXPECTED[stem]
    if raw.get("name") != rec:
        fail(f"{fname}: record name {raw.get('name')!r}, expected {rec!r}")
    names = [f.get("name") for f in raw.get("fields", [])]
    if names != fields:
        fail(f"{fname}: fields {names}, expected {fields}")
    for fld in raw.get("fields", []):
        n = fld.get("name")
        if n in ts_fields and fld.get("type") != {"type": "long",
                                                  "logicalType": "timestamp-millis"}:
            fail(f"{fname}: {n} is not long/timestamp-millis")
        if n in nullable and not isinstance(fld.get("type"), list):
            fail(f"{fname}: {n} should be nullable")
        if n not in nullable and isinstance(fld.get("type"), list):
            fail(f"{fname}: {n} should not be nullable")

    seen = set()
    walk(raw, rec, fname, stem == "touchpoint", seen)

    if stem == "touchpoint":
        ch = [f for f in raw["fields"] if f["name"] == "channel"][0]
        if ch.get("default") != "other":
            fail(f"{fname}: field channel must have default \"other\"")
        at = [f for f in raw["fields"] if f["name"] == "attributes"][0]
        if at.get("type") != {"type": "map", "values": "string"} or at.get("default") != {}:
            fail(f"{fname}: attributes must be map<string> with default {{}}")
    if stem == "order_attributed":
        models = field_type(raw, "models")
        if not isinstance(models, dict) or models.get("name") != "AttributionModels":
            fail(f"{fname}: models must be record AttributionModels")
        else:
            mnames = [f["name"] for f in models.get("fields", [])]
            if mnames != MODELS:
                fail(f"{fname}: AttributionModels fields {mnames}, expected {MODELS}")
            for f in models.get("fields", []):
                if f.get("type") != {"type": "map", "values": "double"}:
                    fail(f"{fname}: models.{f['name']} is not map<double>")

    example = EXAMPLES[stem]
    try:
        out = roundtrip(parsed, example)
        if out != example:
            fail(f"{fname}: round-trip mismatch:\n  in:  {example}\n  out: {out}")
    except Exception as e:  # noqa: BLE001
        fail(f"{fname}: round-trip failed: {e}")
    print(f"ok   {fname}: {rec} ({len(names)} fields, enums: {sorted(seen) or '-'})")


def with_extra_symbol(raw, enum_name, symbol):
    """Copy of raw where the (inline) definition of enum_name gains a symbol."""
    w = copy.deepcopy(raw)
    hits = []

    def rec(node):
        if isinstance(node, dict):
            if node.get("type") == "enum" and node.get("name") == enum_name:
                node["symbols"] = node["symbols"] + [symbol]
                hits.append(node)
            for v in node.values():
                rec(v)
        elif isinstance(node, list):
            for v in node:
                rec(v)

    rec(w)
    if not hits:
        raise KeyError(enum_name)
    return w


def check_resolution(raw_schemas):
    tp = raw_schemas.get("touchpoint")
    if tp is not None:
        reader = parse(tp)
        datum = dict(EXAMPLES["touchpoint"])

        # Channel: a newer producer's symbol resolves to the enum default "other".
        try:
            writer = parse(with_extra_symbol(tp, "Channel", "metaverse"))
            out = roundtrip(writer, dict(datum, channel="metaverse"), reader)
            if out["channel"] != "other":
                fail(f"touchpoint: unknown Channel read as {out['channel']!r}, not 'other'")
            else:
                print("ok   touchpoint: extra Channel symbol 'metaverse' -> 'other'")
        except Exception as e:  # noqa: BLE001
            fail(f"touchpoint: Channel resolution failed: {e}")

        # TouchpointType: same rule.
        try:
            writer = parse(with_extra_symbol(tp, "TouchpointType", "wishlist_add"))
            out = roundtrip(writer, dict(datum, type="wishlist_add"), reader)
            if out["type"] != "other":
                fail(f"touchpoint: unknown type read as {out['type']!r}, not 'other'")
            else:
                print("ok   touchpoint: extra TouchpointType symbol 'wishlist_add' -> 'other'")
        except Exception as e:  # noqa: BLE001
            fail(f"touchpoint: TouchpointType resolution failed: {e}")

        # Survey: unknown symbol must NOT resolve (decode_error, SPEC 7).
        try:
            writer = parse(with_extra_symbol(tp, "Survey", "ghost"))
            try:
                out = roundtrip(writer, dict(datum, survey="ghost"), reader)
                fail(f"touchpoint: unknown Survey symbol decoded as {out['survey']!r}")
            except Exception:  # noqa: BLE001 - any resolution error is the pass
                print("ok   touchpoint: extra Survey symbol 'ghost' -> decode error")
            # A known survey symbol still resolves across the two schemas.
            out = roundtrip(writer, dict(datum, survey="ces", score=5), reader)
            if out["survey"] != "ces":
                fail(f"touchpoint: known Survey symbol read as {out['survey']!r}")
        except Exception as e:  # noqa: BLE001
            fail(f"touchpoint: Survey resolution check failed: {e}")

    st = raw_schemas.get("survey_trigger")
    if st is not None:
        try:
            writer = parse(with_extra_symbol(st, "Survey", "emoji"))
            out = roundtrip(writer, dict(EXAMPLES["survey_trigger"], survey="emoji"),
                            parse(st))
            if out["survey"] != "nps":
                fail(f"survey_trigger: unknown Survey read as {out['survey']!r}, not 'nps'")
            else:
                print("ok   survey_trigger: extra Survey symbol 'emoji' -> 'nps'")
        except Exception as e:  # noqa: BLE001
            fail(f"survey_trigger: Survey resolution failed: {e}")


def main(argv):
    dirpath = argv[1] if len(argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    present = sorted(p[:-5] for p in os.listdir(dirpath) if p.endswith(".avsc"))
    for stem in EXPECTED:
        if stem not in present:
            fail(f"missing {stem}.avsc")
    for stem in present:
        if stem not in EXPECTED:
            fail(f"unexpected schema file {stem}.avsc")
    raw_schemas = {}
    for stem in EXPECTED:
        if stem in present:
            check_file(dirpath, stem, raw_schemas)
    check_resolution(raw_schemas)
    if FAILURES:
        print(f"\n{len(FAILURES)} failure(s)")
        return 1
    print(f"\nall {len(raw_schemas)} schemas OK (fastavro {fastavro.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
