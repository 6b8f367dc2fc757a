#!/usr/bin/env python3
"""House rules for provisioning/prometheus/rules/*.rules.yml beyond what promtool checks:
every alert has a severity label (critical|warning|info) and non-empty summary and
description annotations, and its unit tests (the matching *.rules.test.yml) have at
least one case where it fires and one where it must not.
Prints ok/FAIL lines and "N passed, M failed"; exits 1 on any failure.
"""

import obslib


def main():
    c = obslib.Counter()
    c.check(len(obslib.RULE_FILES) > 0, f"{len(obslib.RULE_FILES)} rule files")
    for path in obslib.RULE_FILES:
        doc = obslib.load_yaml(path)
        alerts = [r for g in doc.get("groups", []) for r in g.get("rules", []) if "alert" in r]
        names = [a["alert"] for a in alerts]
        c.check(len(names) == len(set(names)), f"{path.name}: alert names unique")
        test_path = path.with_name(path.name.replace(".rules.yml", ".rules.test.yml"))
        fires, quiet = set(), set()
        if c.check(test_path.exists(), f"{path.name}: has unit tests {test_path.name}"):
            tests = obslib.load_yaml(test_path)
            for group in tests.get("tests", []):
                for case in group.get("alert_rule_test", []) or []:
                    (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
        for a in alerts:
            name = a["alert"]
            labels, ann = a.get("labels") or {}, a.get("annotations") or {}
            c.check(labels.get("severity") in ("critical", "warning", "info"),
                    f"{name}: severity {labels.get('severity')!r}")
            c.check(bool(str(ann.get("summary", "")).strip()), f"{name}: summary annotation")
            c.check(len(str(ann.get("description", "")).strip()) >= 40, f"{name}: description tells what to check")
            c.check(name in fires, f"{name}: a test where it fires")
            c.check(name in quiet, f"{name}: a test where it does not fire")
    c.finish()


if __name__ == "__main__":
    main()
