#!/usr/bin/env python3
"""One Markdown table cell group from a pytest JUnit file, for the version
matrices (scripts/envoy-matrix.sh, scripts/mlflow-matrix.sh):

    passed | failed | skipped | the first failed tests, or `ok`

A missing or unreadable file gives `- | - | - | no results (<why>)`.
"""
import sys
import xml.etree.ElementTree as ET


def main(path: str) -> str:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return f"- | - | - | no results ({e.__class__.__name__})"
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")

    def n(k):
        return sum(int(s.get(k, 0)) for s in suites)

    failed = [c.get("name") for s in suites for c in s.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    passed = n("tests") - n("failures") - n("errors") - n("skipped")
    names = ", ".join(failed[:3]) + (f" (+{len(failed) - 3} more)" if len(failed) > 3 else "")
    return f"{passed} | {n('failures') + n('errors')} | {n('skipped')} | {names or 'ok'}"


if __name__ == "__main__":
    print(main(sys.argv[1]))
