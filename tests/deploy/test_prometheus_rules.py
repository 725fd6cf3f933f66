"""The Prometheus rules in deploy/prometheus: valid (`promtool check rules`), their unit
tests pass (`promtool test rules`), and every metric they and the Grafana dashboard use is
one the service serves.

promtool comes from the Debian package `prometheus` (`.ci/run` installs it when missing).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install prometheus"
    return subprocess.run(
        [promtool, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_valid() -> None:
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass() -> None:
    done = _promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_and_dashboard_use_metrics_the_service_serves() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "app").rglob("*.py"))
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    exprs = [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((RULES / "grafana-dashboard.json").read_text())
    exprs += [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    for where, expr in exprs:
        for name in set(re.findall(r"\btlsrpt_[a-z_]+", expr)):
            base = name.removesuffix("_total")
            assert f'"{name}"' in source or f'"{base}"' in source, (where, name)
