#!/usr/bin/python3
"""Parses a Prometheus text exposition with prometheus_client (an independent
implementation of the format) and prints what it understood as JSON, so the
C++ tests can check every family and sample round-trips, not only that the
text parses. Exit status 1 with the parser's message when it does not parse.

Usage: parse_exposition.py FILE
Output: [{"name", "type", "documentation", "samples": [{"name", "labels", "value"}]}]
with values as Python repr() strings ("3.0", "nan", "inf") so NaN and
infinities survive JSON.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    try:
        families = [
            {
                "name": fam.name,
                "type": fam.type,
                "documentation": fam.documentation,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": repr(float(s.value))}
                    for s in fam.samples
                ],
            }
            for fam in text_string_to_metric_families(text)
        ]
    except Exception as e:  # the parser raises ValueError and friends
        print(f"prometheus_client could not parse the exposition: {e!r}", file=sys.stderr)
        return 1
    json.dump(families, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
