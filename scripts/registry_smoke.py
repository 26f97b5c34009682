#!/usr/bin/env python3
"""Smoke check of the test schema registry (see scripts/registry), without cargo.

Against the Confluent-compatible API at --url (for Apicurio Registry that is
http://HOST:PORT/apis/ccompat/v7): the global compatibility is BACKWARD;
schemas/touchpoint.avsc registers under a fresh subject and reads back by id
as the same schema (same Avro Parsing Canonical Form: the registry may
re-serialize the text); an unknown id is a 404 with error_code 40403; a
BACKWARD-incompatible version (a new required field) is refused with 409.

Needs fastavro (scripts/test installs it into .venv); HTTP with the standard
library. Exit 0 on success; prints what failed and exits 1 otherwise.
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

from fastavro.schema import parse_schema, to_parsing_canonical_form

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CT = "application/vnd.schemaregistry.v1+json"
UNKNOWN_ID = 2**31 - 1


def step(msg):
    print(f"registry-smoke: {msg}", flush=True)


def fail(msg):
    print(f"registry-smoke: FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def call(method, url, body=None):
    """(status, parsed JSON body or raw text) of one request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Accept": CT, "Content-Type": CT})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        fail(f"{method} {url}: {e} (is the registry running? scripts/registry status)")
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def canonical(text, what):
    try:
        return to_parsing_canonical_form(parse_schema(json.loads(text)))
    except Exception as e:  # noqa: BLE001 - any parse failure is the finding
        fail(f"{what} does not parse as Avro: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("REGISTRY_URL",
                                                    "http://127.0.0.1:8081/apis/ccompat/v7"),
                    help="the Confluent-compatible API base URL")
    ap.add_argument("--schema", default=os.path.join(REPO, "schemas", "touchpoint.avsc"))
    args = ap.parse_args()
    url = args.url.rstrip("/")
    t0 = time.time()

    status, body = call("GET", f"{url}/config")
    if status != 200 or not isinstance(body, dict):
        fail(f"GET {url}/config: HTTP {status} {body!r} (wrong URL? Apicurio needs the "
             f"/apis/ccompat/v7 prefix)")
    level = body.get("compatibilityLevel") or body.get("compatibility")
    if level != "BACKWARD":
        fail(f"global compatibility is {level!r}, want 'BACKWARD' (scripts/registry start sets it)")
    step(f"{url}: global compatibility BACKWARD")

    with open(args.schema, encoding="utf-8") as f:
        text = f.read()
    want = canonical(text, args.schema)
    subject = f"registry-smoke-{uuid.uuid4().hex[:8]}-value"
    status, body = call("POST", f"{url}/subjects/{subject}/versions", {"schema": text})
    sid = body.get("id") if isinstance(body, dict) else None
    if status != 200 or not isinstance(sid, int):
        fail(f"POST {url}/subjects/{subject}/versions: HTTP {status} {body!r}")
    step(f"registered {os.path.basename(args.schema)} under {subject}: id {sid}")

    status, body = call("GET", f"{url}/schemas/ids/{sid}")
    got = body.get("schema") if isinstance(body, dict) else None
    if status != 200 or not isinstance(got, str):
        fail(f"GET {url}/schemas/ids/{sid}: HTTP {status} {body!r}")
    if canonical(got, f"schema id {sid} from the registry") != want:
        fail(f"schema id {sid} read back differs from {args.schema}:\n{got}")
    step(f"read id {sid} back: same schema ({'same text' if got == text else 're-serialized text'})")

    status, body = call("GET", f"{url}/schemas/ids/{UNKNOWN_ID}")
    if status != 404 or not isinstance(body, dict) or body.get("error_code") != 40403:
        fail(f"GET {url}/schemas/ids/{UNKNOWN_ID}: want 404 with error_code 40403, "
             f"got HTTP {status} {body!r}")
    step("unknown id: 404, error_code 40403")

    bad = json.loads(text)
    bad["fields"].append({"name": "registry_smoke_required", "type": "string"})
    status, body = call("POST", f"{url}/subjects/{subject}/versions", {"schema": json.dumps(bad)})
    if status != 409:
        fail(f"a new required field (BACKWARD-incompatible) was not refused with 409: "
             f"HTTP {status} {body!r}")
    step("BACKWARD-incompatible version refused: 409")

    step(f"OK in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
