#!/usr/bin/env python3
"""Offline checks of deploy/: Kubernetes manifests, compose file, dashboard.

    python3 deploy/check/k8s.py [--crd-json OUT.json]

Needs PyYAML and kubernetes-validate (PyPI); `.ci/run` installs them in a
virtualenv. What it checks:

1. Every kustomization under deploy/k8s renders. The kustomizations use only
   `resources`, so rendering is the listed files (and directories) in order;
   any other kustomize field is refused rather than rendered wrongly. When
   `kubectl` is installed, its `kubectl kustomize` output must hold the same
   resources.
2. Every built-in resource validates, strictly (unknown fields are errors),
   against the Kubernetes OpenAPI schemas shipped in kubernetes-validate, for
   the oldest and newest Kubernetes versions it knows from KUBERNETES_VERSIONS.
3. Custom resources (KEDA, prometheus-operator) get a structural check here
   (known kinds, spec keys from the CRDs' field lists, required fields) and
   are written to --crd-json for crds.mjs, which validates them against the
   CRD schemas from npm.
4. The pieces agree: grace period above worker.shutdown_timeout, static
   membership from the pod name, probes on the health endpoints and the port
   of metrics.address, requests and limits, config and Secret references,
   selectors, autoscalers capped at the partition count, the HPA's external
   metric provided by the prometheus-adapter rule, consumer group and topic
   the same everywhere, scrape job names the alert rules use.
5. docker-compose.yml: structure, a scalable worker service (no
   container_name, no published ports), mounted files exist, Prometheus and
   Grafana provisioning agree with the files.
6. dashboard.json: valid JSON, every panel has a Prometheus query, unique ids,
   every template variable used is defined.
7. alerts_test.yml has, for every alert of alerts.yml, a case where it fires
   and one where it stays quiet; every alert has a summary and a runbook.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

DEPLOY = Path(__file__).resolve().parent.parent
K8S = DEPLOY / "k8s"
OLDEST_KUBERNETES = "1.28.0"

failures: list[str] = []


def check(ok: bool, what: str) -> bool:
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)
    return ok


# ---------------------------------------------------------------- rendering


def render(directory: Path) -> list[dict]:
    """The resources of a resources-only kustomization, in order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    extra = set(kustomization) - {"apiVersion", "kind", "resources"}
    if extra:
        raise SystemExit(
            f"{directory}/kustomization.yaml uses {sorted(extra)}: this renderer "
            "supports `resources` only; extend deploy/check/k8s.py first"
        )
    out = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            out.extend(render(path))
        else:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc is not None:
                    doc["source"] = str(path.relative_to(DEPLOY.parent))
                    out.append(doc)
    return out


def identity(doc: dict) -> tuple:
    return (doc["apiVersion"], doc["kind"], doc["metadata"]["name"])


def without_source(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "source"}


def compare_with_kubectl(directory: Path, docs: list[dict]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print(f"note {directory.name}: kubectl not installed, rendered by this script only")
        return
    try:
        rendered = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as error:
        print(f"note {directory.name}: kubectl kustomize did not run ({error}); rendered by this script only")
        return
    theirs = {identity(d): d for d in yaml.safe_load_all(rendered) if d}
    ours = {identity(d): without_source(d) for d in docs}
    check(theirs == ours, f"{directory.name}: kubectl kustomize renders the same {len(ours)} resources")


# ---------------------------------------------------------------- validation

BUILTIN_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2"}

# Spec fields of the custom resources, from the CRDs (KEDA 2.x ScaledObject and
# TriggerAuthentication, prometheus-operator PodMonitor); the CRD schemas from
# npm check types, and these catch misspelt keys.
CR_SPEC_KEYS = {
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "required": {"scaleTargetRef", "triggers"},
        "allowed": {
            "scaleTargetRef", "triggers", "minReplicaCount", "maxReplicaCount",
            "idleReplicaCount", "pollingInterval", "cooldownPeriod",
            "initialCooldownPeriod", "advanced", "fallback",
        },
    },
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "required": set(),
        "allowed": {
            "secretTargetRef", "env", "hashiCorpVault", "azureKeyVault",
            "awsSecretManager", "gcpSecretManager", "podIdentity", "configMapTargetRef",
            "boundServiceAccountToken",
        },
    },
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "required": {"selector", "podMetricsEndpoints"},
        "allowed": {
            "selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel",
            "podTargetLabels", "sampleLimit", "targetLimit", "labelLimit",
            "labelNameLengthLimit", "labelValueLengthLimit", "attachMetadata",
            "scrapeProtocols", "scrapeClass",
        },
    },
}
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold",
    "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset", "excludePersistentLag", "limitToPartitionsWithLag",
    "partitionLimitation", "version", "sasl", "tls", "unsafeSsl",
}
POD_METRICS_ENDPOINT_KEYS = {
    "port", "portNumber", "targetPort", "path", "scheme", "params", "interval",
    "scrapeTimeout", "honorLabels", "honorTimestamps", "relabelings",
    "metricRelabelings", "basicAuth", "authorization", "oauth2", "tlsConfig",
    "bearerTokenSecret", "followRedirects", "enableHttp2", "filterRunning",
    "proxyUrl", "trackTimestampsStaleness",
}


def validate(docs: list[dict], label: str, crs: list[dict]) -> None:
    versions = [OLDEST_KUBERNETES, kubernetes_validate.utils.latest_version()]
    for doc in docs:
        name = f"{label}: {doc['kind']}/{doc['metadata']['name']} ({doc['source']})"
        body = without_source(doc)
        if doc["apiVersion"] in BUILTIN_GROUPS:
            for version in versions:
                try:
                    kubernetes_validate.validate(body, version, strict=True)
                    check(True, f"{name} against Kubernetes {version} (strict)")
                except Exception as error:  # the library raises several kinds
                    check(False, f"{name} against Kubernetes {version}: {error}")
            continue
        rules = CR_SPEC_KEYS.get((doc["apiVersion"], doc["kind"]))
        if not check(rules is not None, f"{name}: a known custom resource"):
            continue
        spec = doc.get("spec", {})
        check(rules["required"] <= set(spec), f"{name}: has {sorted(rules['required'])}")
        unknown = set(spec) - rules["allowed"]
        check(not unknown, f"{name}: spec keys are fields of the CRD (unknown: {sorted(unknown)})")
        if doc["kind"] == "ScaledObject":
            for trigger in spec.get("triggers", []):
                if trigger.get("type") == "kafka":
                    unknown = set(trigger.get("metadata", {})) - KAFKA_TRIGGER_KEYS
                    check(not unknown, f"{name}: kafka trigger keys are the scaler's (unknown: {sorted(unknown)})")
        if doc["kind"] == "PodMonitor":
            for endpoint in spec.get("podMetricsEndpoints", []):
                unknown = set(endpoint) - POD_METRICS_ENDPOINT_KEYS
                check(not unknown, f"{name}: endpoint keys are the CRD's (unknown: {sorted(unknown)})")
        if all(identity(doc) != identity(c) for c in crs):
            crs.append(doc)


# ---------------------------------------------------------------- agreement


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return float(match.group(1)) * units[match.group(2)]


def find(docs: list[dict], kind: str, name: str) -> dict | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def input_partitions() -> dict[str, int]:
    """Partitions per topic, from the compose file's topic-init step."""
    compose = yaml.safe_load((DEPLOY / "docker" / "docker-compose.yml").read_text())
    script = "\n".join(compose["services"]["topics"]["command"])
    return {name: int(n) for name, n in re.findall(r"([\w.]+):(\d+)", script)}


def agreement(docs: list[dict], label: str) -> None:
    worker = find(docs, "Deployment", "pythia-worker")
    if not check(worker is not None, f"{label}: has the pythia-worker Deployment"):
        return
    pod = worker["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}

    config_path = env.get("PYTHIA_CONFIG", {}).get("value", "")
    mount = next(
        (m for m in container.get("volumeMounts", []) if config_path.startswith(m["mountPath"] + "/")),
        None,
    )
    volume = mount and next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    configmap = volume and find(docs, "ConfigMap", volume["configMap"]["name"])
    key = config_path.rsplit("/", 1)[-1]
    if not check(
        bool(configmap) and key in configmap["data"],
        f"{label}: PYTHIA_CONFIG={config_path} is a ConfigMap key mounted in the worker",
    ):
        return
    config = tomllib.loads(configmap["data"][key])
    group = config["kafka"]["group"]
    topics = config["kafka"]["topics"]
    shutdown = duration_seconds(config.get("worker", {}).get("shutdown_timeout", "30s"))
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    check(grace > shutdown, f"{label}: terminationGracePeriodSeconds {grace} > worker.shutdown_timeout {shutdown:g}s")

    instance = env.get("PYTHIA_KAFKA__CONSUMER__GROUP_INSTANCE_ID", {})
    check(
        instance.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
        f"{label}: group.instance.id comes from the pod name (downward API)",
    )
    address = env.get("PYTHIA_METRICS__ADDRESS", {}).get("value", "")
    port = next((p for p in container.get("ports", []) if p.get("name") == "metrics"), {})
    check(
        address.startswith("0.0.0.0:") and address.endswith(f":{port.get('containerPort')}"),
        f"{label}: metrics.address {address} listens on all interfaces at the `metrics` port",
    )
    for probe, path in [("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")]:
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "metrics", f"{label}: {probe} GETs {path} on the metrics port")

    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            resources = c.get("resources", {})
            check(
                {"cpu", "memory"} <= set(resources.get("requests", {}))
                and {"cpu", "memory"} <= set(resources.get("limits", {})),
                f"{label}: {deployment['metadata']['name']}/{c['name']} has cpu and memory requests and limits",
            )
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        check(matches(deployment["spec"]["selector"], labels), f"{label}: {deployment['metadata']['name']} selector matches its pods")

    for name, entry in env.items():
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            secret = find(docs, "Secret", ref["name"])
            check(
                secret is not None and ref["key"] in secret.get("stringData", secret.get("data", {})),
                f"{label}: {name} comes from Secret {ref['name']} key {ref['key']}",
            )
    check(
        "sasl_password" not in config["kafka"].get("security", {}),
        f"{label}: no password in the ConfigMap",
    )

    pdb = find(docs, "PodDisruptionBudget", "pythia-worker")
    check(pdb is not None and matches(pdb["spec"]["selector"], pod["metadata"]["labels"]), f"{label}: the PDB selects the workers")

    exporter = find(docs, "Deployment", "pythia-lag-exporter")
    if check(exporter is not None, f"{label}: has the lag exporter Deployment"):
        args = exporter["spec"]["template"]["spec"]["containers"][0]["args"]
        check(args[:1] == ["lag"] and "--serve" in args, f"{label}: the exporter runs `pythia lag --serve`")
        check(args[args.index("--group") + 1] == group, f"{label}: the exporter watches group {group}")
        service = find(docs, "Service", "pythia-lag-exporter")
        check(
            service is not None and service["spec"]["selector"].items() <= exporter["spec"]["template"]["metadata"]["labels"].items(),
            f"{label}: the exporter Service selects the exporter",
        )

    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    for monitor in (d for d in docs if d["kind"] == "PodMonitor"):
        target = next(
            (d for d in docs if d["kind"] == "Deployment" and matches(monitor["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])),
            None,
        )
        name = monitor["metadata"]["name"]
        if check(target is not None, f"{label}: PodMonitor {name} selects a Deployment's pods"):
            ports = {p.get("name") for c in target["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                check(endpoint.get("port") in ports, f"{label}: PodMonitor {name} scrapes a named port of its pods")
                jobs = [r.get("replacement") for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"]
                check(jobs == [target["metadata"]["name"]], f"{label}: PodMonitor {name} sets job={target['metadata']['name']}")
    check('job="pythia-lag-exporter"' in alerts, f"{label}: the alert rules use the exporter's job name")

    partitions = input_partitions()
    limit = min(partitions[t] for t in topics)
    hpa = find(docs, "HorizontalPodAutoscaler", "pythia-worker")
    if hpa:
        spec = hpa["spec"]
        check(spec["scaleTargetRef"]["name"] == "pythia-worker", f"{label}: the HPA scales the worker")
        check(spec["maxReplicas"] <= limit, f"{label}: HPA maxReplicas {spec['maxReplicas']} <= {limit} partitions")
        metric = spec["metrics"][0]["external"]["metric"]
        check(metric["selector"]["matchLabels"].get("group") == group, f"{label}: the HPA's lag metric is group {group}'s")
        adapter = yaml.safe_load((K8S / "autoscale-hpa" / "prometheus-adapter-values.yaml").read_text())
        names = [r["name"]["as"] for r in adapter["rules"]["external"]]
        check(metric["name"] in names, f"{label}: prometheus-adapter provides external metric {metric['name']}")
        for rule in adapter["rules"]["external"]:
            check(
                "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]
                and "by (group)" in rule["metricsQuery"],
                f"{label}: the adapter rule sums lag by group over the selected series",
            )
    scaled = find(docs, "ScaledObject", "pythia-worker")
    if scaled:
        spec = scaled["spec"]
        check(spec["scaleTargetRef"]["name"] == "pythia-worker", f"{label}: the ScaledObject scales the worker")
        check(spec["maxReplicaCount"] <= limit, f"{label}: KEDA maxReplicaCount {spec['maxReplicaCount']} <= {limit} partitions")
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            check(trigger["type"] == "kafka" and "lagThreshold" in meta, f"{label}: a kafka trigger with lagThreshold")
            check(meta["consumerGroup"] == group and meta["topic"] in topics, f"{label}: KEDA watches group {group} on {meta['topic']}")
            check(meta["bootstrapServers"] == config["kafka"]["brokers"], f"{label}: KEDA reads the workers' brokers")
            auth = trigger.get("authenticationRef", {}).get("name")
            if auth:
                ta = find(docs, "TriggerAuthentication", auth)
                if check(ta is not None, f"{label}: TriggerAuthentication {auth} exists"):
                    for ref in ta["spec"].get("secretTargetRef", []):
                        secret = find(docs, "Secret", ref["name"])
                        check(
                            secret is not None and ref["key"] in secret.get("stringData", {}),
                            f"{label}: KEDA parameter {ref['parameter']} comes from Secret {ref['name']} key {ref['key']}",
                        )
    check(not (hpa and scaled), f"{label}: at most one autoscaler")


# ---------------------------------------------------------------- compose


def compose_checks() -> None:
    directory = DEPLOY / "docker"
    compose = yaml.safe_load((directory / "docker-compose.yml").read_text())
    services = compose["services"]
    worker = services["worker"]
    check("container_name" not in worker and "ports" not in worker, "compose: worker scales (no container_name, no published ports)")
    build = worker.get("build", {})
    check(
        (directory / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve().is_file(),
        "compose: the worker's Dockerfile exists at context + dockerfile",
    )
    shutdown = duration_seconds(worker["environment"].get("PYTHIA_WORKER__SHUTDOWN_TIMEOUT", "30s"))
    check(duration_seconds(worker.get("stop_grace_period", "10s")) > shutdown, "compose: stop_grace_period > worker.shutdown_timeout")
    check(
        worker["depends_on"]["topics"]["condition"] == "service_completed_successfully",
        "compose: workers start after the topic-init one-shot",
    )
    check(services["kafka"]["image"].startswith("apache/kafka:"), "compose: Apache Kafka image")
    env = services["kafka"]["environment"]
    check("controller" in env["KAFKA_PROCESS_ROLES"] and "KAFKA_CONTROLLER_QUORUM_VOTERS" in env, "compose: Kafka runs in KRaft mode")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                check((directory / source).exists(), f"compose: {name} mounts existing {source}")
    exporter = services["lag-exporter"]
    check(exporter["entrypoint"] == ["pythia"] and exporter["command"][0] == "lag" and "--serve" in exporter["command"], "compose: the lag exporter runs `pythia lag --serve`")
    group = worker["environment"]["PYTHIA_KAFKA__GROUP"]
    check(exporter["command"][exporter["command"].index("--group") + 1] == group, f"compose: the exporter watches group {group}")

    prometheus = yaml.safe_load((directory / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    check(set(jobs) == {"pythia-worker", "pythia-lag-exporter"}, "compose: Prometheus scrapes the workers and the exporter with the alert rules' job names")
    dns = jobs["pythia-worker"].get("dns_sd_configs", [{}])[0]
    port = worker["environment"]["PYTHIA_METRICS__ADDRESS"].rsplit(":", 1)[1]
    check(dns.get("names") == ["worker"] and str(dns.get("port")) == port, "compose: workers found by DNS on the service name at metrics.address's port")
    serve = exporter["command"][exporter["command"].index("--serve") + 1].rsplit(":", 1)[1]
    check(jobs["pythia-lag-exporter"]["static_configs"][0]["targets"] == [f"lag-exporter:{serve}"], "compose: the exporter's target is its --serve port")
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    check(
        all(rule in mounted and mounted[rule].endswith("alerts.yml") for rule in prometheus["rule_files"]),
        "compose: Prometheus loads alerts.yml",
    )

    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "pythia.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    check(any(target.startswith(path + "/") and source.endswith("dashboard.json") for target, source in grafana.items()), "compose: Grafana's dashboard provider path holds dashboard.json")
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    url = datasources["datasources"][0]["url"]
    check(re.match(r"http://prometheus:9090/?$", url) is not None and "prometheus" in services, "compose: Grafana's data source is the prometheus service")


# ---------------------------------------------------------------- dashboard


def dashboard_checks() -> None:
    try:
        dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    except json.JSONDecodeError as error:
        check(False, f"dashboard.json is valid JSON: {error}")
        return
    check(True, "dashboard.json is valid JSON")
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    builtins = {"__rate_interval", "__interval", "__range"}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    check(len(ids) == len(set(ids)), "dashboard: panel ids are unique")
    for panel in panels:
        title = panel["title"]
        check(panel["datasource"]["type"] == "prometheus", f"dashboard: {title!r} uses the Prometheus data source")
        check(bool(panel["targets"]) and all(t.get("expr") for t in panel["targets"]), f"dashboard: {title!r} has queries")
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            check(used <= variables | builtins, f"dashboard: {title!r} uses only defined variables ({sorted(used - variables - builtins)} undefined)")


# ---------------------------------------------------------------- alert tests


def alert_test_coverage() -> None:
    """Every alert has a unit test where it fires and one where it does not."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert")
            if name is None:
                continue
            mine = [c for c in cases if c["alertname"] == name]
            check(any(c.get("exp_alerts") for c in mine), f"alerts_test.yml: {name} fires")
            check(any(not c.get("exp_alerts") for c in mine), f"alerts_test.yml: {name} stays quiet")
            check(
                {"summary", "runbook"} <= set(rule.get("annotations", {})),
                f"alerts.yml: {name} has a summary and a runbook",
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crd-json", type=Path, help="write the custom resources here for crds.mjs")
    args = parser.parse_args()
    crs: list[dict] = []
    overlays = sorted(p.parent for p in K8S.glob("*/kustomization.yaml"))
    check(bool(overlays), "deploy/k8s has kustomizations")
    for directory in overlays:
        docs = render(directory)
        label = directory.name
        print(f"== {label}: {len(docs)} resources")
        compare_with_kubectl(directory, docs)
        validate(docs, label, crs)
        agreement(docs, label)
    print("== docker compose")
    compose_checks()
    print("== dashboard")
    dashboard_checks()
    print("== alert rule tests")
    alert_test_coverage()
    if args.crd_json:
        args.crd_json.write_text(json.dumps(crs, indent=1))
        print(f"{len(crs)} custom resources written to {args.crd_json}")
    print(f"{len(failures)} failed" if failures else "all deploy checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
