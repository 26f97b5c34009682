#!/usr/bin/env python3
"""Convert the CDNOW sample (Fader, Hardie & Lee) into touchstream JSON Lines.

Standard library only. Usage:

    python3 scripts/cdnow_to_jsonl.py CDNOW_sample.txt > tests/data/cdnow_calibration.jsonl

Input: `CDNOW_sample.txt` as shipped in the `lifetimes` PyPI package
(`lifetimes/datasets/CDNOW_sample.txt`), whitespace-separated, CRLF, one
transaction per line:

    master_id  sample_id  date(YYYYMMDD)  quantity  amount
    00004      0001       19970101        2         29.33

Output: one `order_placed` touchpoint per transaction dated within the
calibration period 1997-01-01..1997-09-30 (inclusive), sorted by date
(stable, i.e. ties keep file order).

  * event_id    = "cdnow-<row>"   row = 0-based line index in CDNOW_sample.txt
  * customer_id = "cdnow-<sample_id>" (sample_id as an integer, 1..2357; the
                  same ID as in `cdnow_customers_summary.csv`)
  * order_id    = "cdnow-o-<row>"
  * timestamp   = purchase date at 00:00:00Z
  * value       = dollar amount (float)
"""

import json
import sys

CAL_START = "19970101"
CAL_END = "19970930"  # inclusive


def rows(path):
    with open(path, "r", encoding="ascii", newline=None) as f:
        for idx, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            _master_id, sample_id, date, _qty, amount = line.split()
            yield idx, int(sample_id), date, float(amount)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: cdnow_to_jsonl.py CDNOW_sample.txt\n")
        return 2
    txns = [r for r in rows(argv[1]) if CAL_START <= r[2] <= CAL_END]
    txns.sort(key=lambda r: r[2])  # list.sort is stable
    out = sys.stdout
    for idx, cust, date, amount in txns:
        ts = "%s-%s-%sT00:00:00Z" % (date[0:4], date[4:6], date[6:8])
        rec = {
            "event_id": "cdnow-%d" % idx,
            "customer_id": "cdnow-%d" % cust,
            "channel": "web",
            "type": "order_placed",
            "timestamp": ts,
            "value": amount,
            "currency": "USD",
            "order_id": "cdnow-o-%d" % idx,
        }
        out.write(json.dumps(rec, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
