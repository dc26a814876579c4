#!/usr/bin/env python3
"""Writes prometheusrule.yaml and dashboard.yaml from their sources.

    python3 deploy/k8s/monitoring/generate.py

kustomize loads no file from outside a kustomization's directory, so the
alert rules (deploy/prometheus/alerts.yml) and the dashboard
(deploy/grafana/dashboard.json) are copied in here as Kubernetes resources:
the rules' groups as the spec of a PrometheusRule, the dashboard verbatim as
a ConfigMap key. Run it after editing either source; deploy/check/k8s.py
fails while the copies differ. Standard library only, and the sources' text
is embedded as it is (comments included), so the output reads like them.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent.parent
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"

# The selector label of kube-prometheus-stack (see podmonitor.yaml).
RELEASE = "kube-prometheus-stack"


def indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def prometheus_rule() -> str:
    source = ALERTS.read_text()
    # The groups, from the top-level `groups:` key on; the file's header
    # comment stays with the file.
    at = source.index("\ngroups:") + 1
    return (
        "# Generated from deploy/prometheus/alerts.yml by generate.py: edit the\n"
        "# source, then run `python3 deploy/k8s/monitoring/generate.py`.\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: pythia\n"
        "  labels:\n"
        "    app.kubernetes.io/part-of: pythia\n"
        f"    release: {RELEASE}\n"
        "spec:\n" + indent(source[at:], 2)
    )


def dashboard() -> str:
    source = DASHBOARD.read_text()
    if not source.endswith("\n") or source.endswith("\n\n"):
        raise SystemExit(f"{DASHBOARD} must end with exactly one newline to be embedded verbatim")
    return (
        "# Generated from deploy/grafana/dashboard.json by generate.py: edit the\n"
        "# source, then run `python3 deploy/k8s/monitoring/generate.py`.\n"
        "# Grafana's dashboard sidecar (kube-prometheus-stack's Grafana has it)\n"
        "# loads ConfigMaps labelled grafana_dashboard=\"1\"; if yours watches only\n"
        "# its own namespace (grafana.sidecar.dashboards.searchNamespace), set it\n"
        "# to ALL or apply this ConfigMap there.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: pythia-dashboard\n"
        "  labels:\n"
        "    app.kubernetes.io/part-of: pythia\n"
        '    grafana_dashboard: "1"\n'
        "data:\n"
        "  pythia.json: |\n" + indent(source, 4)
    )


def main() -> None:
    for name, text in [("prometheusrule.yaml", prometheus_rule()), ("dashboard.yaml", dashboard())]:
        (HERE / name).write_text(text)
        print(f"wrote {(HERE / name).relative_to(DEPLOY.parent)}")


if __name__ == "__main__":
    main()
