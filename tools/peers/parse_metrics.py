"""Parses a metrics exposition on stdin with the Prometheus project's own Python client
(prometheus_client, from PyPI) and prints its samples as JSON, for the deployer's tests.

Both of the client's parsers run: the strict OpenMetrics one (the format the deployer announces:
it checks `# EOF`, counter `_total` suffixes, histogram bucket order and `+Inf`) and the classic
Prometheus text-format one. Any parse error exits non-zero with the parser's message.
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic


def samples(families):
    out = []
    for family in families:
        for s in family.samples:
            out.append({"family": family.name, "type": family.type, "name": s.name,
                        "labels": s.labels, "value": s.value})
    return out


def main():
    text = sys.stdin.read()
    strict = samples(openmetrics(text))
    # The classic parser treats "# EOF" as a comment; it must agree on every sample.
    loose = samples(classic(text))
    key = lambda s: (s["name"], sorted(s["labels"].items()))
    loose_values = {json.dumps(key(s)): s["value"] for s in loose}
    for s in strict:
        k = json.dumps(key(s))
        if k not in loose_values or loose_values[k] != s["value"]:
            print(f"parsers disagree on {k}", file=sys.stderr)
            sys.exit(2)
    json.dump(strict, sys.stdout)


if __name__ == "__main__":
    main()
