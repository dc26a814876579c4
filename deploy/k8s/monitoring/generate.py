#!/usr/bin/env python3
"""Writes prometheusrule.yaml and dashboard.yaml from their sources.

    python3 deploy/k8s/monitoring/generate.py

kustomize loads no file from outside a kustomization's directory, so the
alert rules (deploy/prometheus/alerts.yml, queue_alerts.yml) and the
dashboards (deploy/grafana/dashboard.json, queues.json) are copied in here as
Kubernetes resources: each rule file's groups as the spec of a
PrometheusRule, each dashboard verbatim as a ConfigMap key. Run it after
editing a source; deploy/check/k8s.py fails while the copies differ. Standard library only, and the sources' text
is embedded as it is (comments included), so the output reads like them.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent.parent
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
QUEUE_ALERTS = DEPLOY / "prometheus" / "queue_alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
QUEUE_DASHBOARD = DEPLOY / "grafana" / "queues.json"

# The selector label of kube-prometheus-stack (see podmonitor.yaml).
RELEASE = "kube-prometheus-stack"


def indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def prometheus_rule(path: Path, name: str) -> str:
    source = path.read_text()
    # The groups, from the top-level `groups:` key on; the file's header
    # comment stays with the file.
    at = source.index("\ngroups:") + 1
    return (
        f"# Generated from deploy/prometheus/{path.name} by generate.py: edit the\n"
        "# source, then run `python3 deploy/k8s/monitoring/generate.py`.\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        f"  name: {name}\n"
        "  labels:\n"
        "    app.kubernetes.io/part-of: pythia\n"
        f"    release: {RELEASE}\n"
        "spec:\n" + indent(source[at:], 2)
    )


def dashboard(path: Path, name: str, key: str) -> str:
    source = path.read_text()
    if not source.endswith("\n") or source.endswith("\n\n"):
        raise SystemExit(f"{path} must end with exactly one newline to be embedded verbatim")
    return (
        f"# Generated from deploy/grafana/{path.name} by generate.py: edit the\n"
        "# source, then run `python3 deploy/k8s/monitoring/generate.py`.\n"
        "# Grafana's dashboard sidecar (kube-prometheus-stack's Grafana has it)\n"
        "# loads ConfigMaps labelled grafana_dashboard=\"1\"; if yours watches only\n"
        "# its own namespace (grafana.sidecar.dashboards.searchNamespace), set it\n"
        "# to ALL or apply this ConfigMap there.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        f"  name: {name}\n"
        "  labels:\n"
        "    app.kubernetes.io/part-of: pythia\n"
        '    grafana_dashboard: "1"\n'
        "data:\n"
        f"  {key}: |\n" + indent(source, 4)
    )


def main() -> None:
    for name, text in [
        ("prometheusrule.yaml", prometheus_rule(ALERTS, "pythia")),
        ("dashboard.yaml", dashboard(DASHBOARD, "pythia-dashboard", "pythia.json")),
        ("queue-prometheusrule.yaml", prometheus_rule(QUEUE_ALERTS, "pythia-queues")),
        ("queue-dashboard.yaml", dashboard(QUEUE_DASHBOARD, "pythia-queue-dashboard", "pythia-queues.json")),
    ]:
        (HERE / name).write_text(text)
        print(f"wrote {(HERE / name).relative_to(DEPLOY.parent)}")


if __name__ == "__main__":
    main()
