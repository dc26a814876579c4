#!/usr/bin/env python3
"""Offline checks of deploy/: Kubernetes manifests, alert rules, compose, dashboard.

    python3 deploy/check/k8s.py [--crd-json OUT.json]

Needs PyYAML, kubernetes-validate (PyPI) and kubectl with kustomize v4 or
later built in; `cargo xtask test deploy` installs them. What it checks:

1. Every kustomization under deploy/k8s renders with `kubectl kustomize`, as
   a user applies it (kustomize's own load restrictor included).
2. Every built-in resource validates, strictly (unknown fields are errors),
   against the Kubernetes OpenAPI schemas shipped in kubernetes-validate, for
   the oldest and the newest Kubernetes version it knows.
3. Custom resources (KEDA, prometheus-operator) get a structural check here
   (known kinds, spec keys from the CRDs' field lists, required fields) and
   are written to --crd-json for crds.mjs, which validates them against the
   CRD schemas from npm.
4. The pieces agree: grace period above worker.shutdown_timeout, membership
   (dynamic on the Deployment, static from the pod name only on the
   StatefulSet, whose pod template is otherwise the Deployment's), rollout
   and disruption budget, probes on the health endpoints and the port of
   metrics.address, requests and limits, pinned images, TLS (the CA file
   of ssl_ca_location is mounted), config and Secret references (every key
   in secret.example.yaml), selectors, consumer group and topic the same
   everywhere, scrape job names the alert rules use.
5. Layout: no `replicas` and no Secret in the base, no Secret in any
   overlay; every other overlay sets the count: fixed sizes between 2 and
   the partition count, and the HPA and KEDA overlays carry the same bounds
   (2 to the partition count), lag target and behaviour (up 100 % every
   15 s at once, down 50 % every 60 s after a 300 s window); KEDA's Kafka
   options; monitoring in every overlay, with the `release` label, a
   PrometheusRule whose groups are alerts.yml's, one whose groups are
   queue_alerts.yml's, and dashboard ConfigMaps holding dashboard.json and
   queues.json as they are.
6. alerts.yml and queue_alerts.yml: every aggregation (`sum by`, `max by`, ...) and every `on`
   join names `cluster` and `namespace`, none drops them (no `absent`,
   no aggregation without `by`), and their tests (alerts_test.yml,
   queue_alerts_test.yml) have, for every alert,
   a case where it fires and one where it stays quiet; every alert has a
   summary and a runbook.
7. docker-compose.yml: structure, scalable worker services (Kafka's, the
   RabbitMQ job workers of profile `rabbitmq`, the Redis strategy workers of
   profile `redis` and the NATS pools of profile `nats`; no container_name,
   no published ports), published ports bound to 127.0.0.1,
   a Grafana password that must be set, mounted files exist, Prometheus and
   Grafana provisioning agree with the files (both rule files, both
   dashboards; the queue workers scraped as job pythia-queue-worker).
8. dashboard.json and queues.json: valid JSON, every panel has a Prometheus query, unique ids,
   every template variable used is defined.
9. deploy/k8s/rabbitmq: every overlay renders and validates as in 1-3; the
   worker reads its pythia.toml from the ConfigMap and the URL from the
   Secret (keys in rabbitmq/secret.example.yaml, no password in the
   ConfigMap), probes on the health endpoints and the metrics port, grace
   period above shutdown_timeout; KEDA's rabbitmq trigger and the HPA's
   metric name the ConfigMap's queue, count over HTTP (ready and
   unacknowledged), and both overlays carry the same bounds, target and
   behaviour.
10. deploy/k8s/redis and deploy/k8s/nats: the same for their overlays (the
   URL from their Secret, keys in their secret.example.yaml); KEDA's redis
   trigger watches the list the workers read (mode list), redis-streams the
   group and stream they read (mode stream) on its lag, nats-jetstream the
   stream and durable consumer they share; every queue worker's KEDA
   overlay keeps 2 replicas at least and the behaviour above. The queue
   workers share one Deployment (deploy/k8s/shared/queue-worker).
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
import kubernetes_validate.utils
import yaml

DEPLOY = Path(__file__).resolve().parent.parent
K8S = DEPLOY / "k8s"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
QUEUE_ALERTS = DEPLOY / "prometheus" / "queue_alerts.yml"
QUEUE_ALERT_TESTS = DEPLOY / "prometheus" / "queue_alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
QUEUE_DASHBOARD = DEPLOY / "grafana" / "queues.json"
# The scrape job of the queue workers (compose), which queue_alerts.yml uses.
QUEUE_JOB = "pythia-queue-worker"
SECRET_EXAMPLE = K8S / "secret.example.yaml"

WORKER = "pythia-worker"
# Labels every aggregation and join of the alert rules keeps.
KEPT_LABELS = {"cluster", "namespace"}
# The scaling policy both autoscalers follow (docs/operations.md explains it).
MIN_REPLICAS = 2
BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
    },
}
# Variables the StatefulSet adds to the Deployment's pod template.
STATIC_MEMBERSHIP_ENV = {
    "PYTHIA_KAFKA__CONSUMER__GROUP_INSTANCE_ID",
    "PYTHIA_KAFKA__GROUP_PROTOCOL",
    "PYTHIA_KAFKA__SESSION_TIMEOUT",
}
REGENERATE = "run `python3 deploy/k8s/monitoring/generate.py`"

failures: list[str] = []


def check(ok: bool, what: str) -> bool:
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)
    return ok


# ---------------------------------------------------------------- rendering


def kustomize_version(kubectl: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    found = re.match(r"v?(\d+)\.(\d+)", json.loads(out).get("kustomizeVersion", ""))
    return tuple(int(n) for n in found.groups()) if found else None


def kustomizations() -> tuple[list[Path], list[Path]]:
    """The directories under deploy/k8s that render, and the components."""
    renderable, components = [], []
    for file in sorted(K8S.glob("*/kustomization.yaml")):
        kind = yaml.safe_load(file.read_text()).get("kind", "Kustomization")
        (components if kind == "Component" else renderable).append(file.parent)
    return renderable, components


def render(kubectl: str, directory: Path) -> list[dict] | None:
    """`kubectl kustomize` of a directory, each resource tagged with its overlay."""
    name = directory.relative_to(K8S).as_posix()
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120,
    )
    if not check(result.returncode == 0, f"{name}: kubectl kustomize renders it" + (f": {result.stderr.strip()}" if result.returncode else "")):
        return None
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    for doc in docs:
        doc["source"] = f"deploy/k8s/{name}"
    return docs


def without_source(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "source"}


# ---------------------------------------------------------------- validation

BUILTIN_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2"}

# Spec fields of the custom resources, from the CRDs (KEDA 2.x ScaledObject and
# TriggerAuthentication, prometheus-operator PodMonitor and PrometheusRule); the
# CRD schemas from npm check types, and these catch misspelt keys.
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
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "required": {"groups"},
        "allowed": {"groups"},
    },
}
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold",
    "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset", "excludePersistentLag", "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions", "partitionLimitation", "version", "sasl",
    "tls", "unsafeSsl",
}
KAFKA_AUTH_PARAMETERS = {
    "sasl", "saslTokenProvider", "username", "password", "tls", "ca", "cert", "key",
    "keyPassword", "keytab", "realm", "kerberosConfig", "kerberosServiceName",
    "kerberosDisableFAST", "oauthTokenEndpointUri", "scopes", "oauthExtensions",
}
# KEDA's rabbitmq scaler: trigger metadata and TriggerAuthentication parameters.
RABBIT_TRIGGER_KEYS = {
    "host", "hostFromEnv", "protocol", "queueName", "mode", "value", "activationValue",
    "vhostName", "useRegex", "excludeUnacknowledged", "pageSize", "operation",
    "timeout", "unsafeSsl", "usernameFromEnv", "passwordFromEnv",
}
RABBIT_AUTH_PARAMETERS = {"host", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}
# KEDA's redis (list length) and redis-streams scalers, and their parameters.
REDIS_CONNECTION_KEYS = {
    "address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv",
    "usernameFromEnv", "passwordFromEnv", "enableTLS", "unsafeSsl", "databaseIndex",
}
REDIS_TRIGGER_KEYS = REDIS_CONNECTION_KEYS | {"listName", "listLength", "activationListLength"}
REDIS_STREAMS_TRIGGER_KEYS = REDIS_CONNECTION_KEYS | {
    "stream", "consumerGroup", "pendingEntriesCount", "streamLength", "lagCount",
    "activationLagCount", "activationPendingEntriesCount", "activationStreamLength",
}
REDIS_AUTH_PARAMETERS = {"address", "host", "port", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}
# KEDA's nats-jetstream scaler (it reads the server's monitoring endpoint).
NATS_TRIGGER_KEYS = {
    "natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold",
    "activationLagThreshold", "useHttps",
}
NATS_AUTH_PARAMETERS = {"natsServerMonitoringEndpoint", "account"}
TRIGGER_KEYS = {
    "kafka": KAFKA_TRIGGER_KEYS, "rabbitmq": RABBIT_TRIGGER_KEYS, "redis": REDIS_TRIGGER_KEYS,
    "redis-streams": REDIS_STREAMS_TRIGGER_KEYS, "nats-jetstream": NATS_TRIGGER_KEYS,
}
AUTH_PARAMETERS = {
    "kafka": KAFKA_AUTH_PARAMETERS, "rabbitmq": RABBIT_AUTH_PARAMETERS, "redis": REDIS_AUTH_PARAMETERS,
    "redis-streams": REDIS_AUTH_PARAMETERS, "nats-jetstream": NATS_AUTH_PARAMETERS,
}
POD_METRICS_ENDPOINT_KEYS = {
    "port", "portNumber", "targetPort", "path", "scheme", "params", "interval",
    "scrapeTimeout", "honorLabels", "honorTimestamps", "relabelings",
    "metricRelabelings", "basicAuth", "authorization", "oauth2", "tlsConfig",
    "bearerTokenSecret", "followRedirects", "enableHttp2", "filterRunning",
    "proxyUrl", "trackTimestampsStaleness",
}


def kubernetes_versions() -> list[str]:
    known = kubernetes_validate.utils.all_versions()
    oldest = min(known, key=lambda v: tuple(int(n) for n in v.split(".")))
    return sorted({oldest, kubernetes_validate.utils.latest_version()})


def validate(docs: list[dict], label: str, crs: list[dict]) -> None:
    versions = kubernetes_versions()
    for doc in docs:
        name = f"{label}: {doc['kind']}/{doc['metadata']['name']}"
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
                kind = trigger.get("type")
                if check(kind in TRIGGER_KEYS, f"{name}: a {kind} trigger, whose keys this check knows"):
                    unknown = set(trigger.get("metadata", {})) - TRIGGER_KEYS[kind]
                    check(not unknown, f"{name}: {kind} trigger keys are the scaler's (unknown: {sorted(unknown)})")
        if doc["kind"] == "TriggerAuthentication":
            # The parameters of the scalers whose triggers use it.
            users = {
                trigger.get("type")
                for scaled in docs if scaled["kind"] == "ScaledObject"
                for trigger in scaled["spec"].get("triggers", [])
                if trigger.get("authenticationRef", {}).get("name") == doc["metadata"]["name"]
            }
            allowed = set().union(*(AUTH_PARAMETERS.get(u, set()) for u in users))
            unknown = {r["parameter"] for r in spec.get("secretTargetRef", [])} - allowed
            check(
                bool(users) and not unknown,
                f"{name}: parameters are those of its scalers {sorted(users)} (unknown: {sorted(unknown)})",
            )
        if doc["kind"] == "PodMonitor":
            for endpoint in spec.get("podMetricsEndpoints", []):
                unknown = set(endpoint) - POD_METRICS_ENDPOINT_KEYS
                check(not unknown, f"{name}: endpoint keys are the CRD's (unknown: {sorted(unknown)})")
        # Every distinct resource: the overlays share names, not contents.
        if all(without_source(doc) != without_source(c) for c in crs):
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


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def secret_example() -> dict[str, set[str]]:
    """Secret name -> keys, from secret.example.yaml."""
    out: dict[str, set[str]] = {}
    for doc in yaml.safe_load_all(SECRET_EXAMPLE.read_text()):
        if doc and doc.get("kind") == "Secret":
            keys = set(doc.get("stringData", {})) | set(doc.get("data", {}))
            out.setdefault(doc["metadata"]["name"], set()).update(keys)
    return out


def worker_config(docs: list[dict], worker: dict, label: str) -> dict | None:
    pod = worker["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    config_path = env.get("PYTHIA_CONFIG", {}).get("value", "")
    mount = next(
        (m for m in container.get("volumeMounts", []) if config_path.startswith(m["mountPath"] + "/")),
        None,
    )
    volume = mount and next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    configmap = volume and "configMap" in volume and find(docs, "ConfigMap", volume["configMap"]["name"])
    key = config_path.rsplit("/", 1)[-1]
    if not check(
        bool(configmap) and key in configmap["data"],
        f"{label}: PYTHIA_CONFIG={config_path} is a ConfigMap key mounted in the worker",
    ):
        return None
    return tomllib.loads(configmap["data"][key])


def mounted_secret_file(pod: dict, container: dict, path: str) -> tuple[str, str] | None:
    """(Secret name, key) of the file at `path`, if a Secret volume mounts it."""
    for mount in container.get("volumeMounts", []):
        if not path.startswith(mount["mountPath"].rstrip("/") + "/"):
            continue
        relative = path[len(mount["mountPath"].rstrip("/")) + 1:]
        volume = next((v for v in pod["spec"].get("volumes", []) if v["name"] == mount["name"]), {})
        secret = volume.get("secret")
        if not secret:
            continue
        items = secret.get("items")
        if items is None:
            return (secret["secretName"], relative)
        for item in items:
            if item["path"] == relative:
                return (secret["secretName"], item["key"])
    return None


def agreement(docs: list[dict], label: str) -> None:
    worker = next((d for d in workloads(docs) if d["metadata"]["name"] == WORKER), None)
    if not check(worker is not None, f"{label}: has the {WORKER} workload"):
        return
    kind = worker["kind"]
    pod = worker["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    config = worker_config(docs, worker, label)
    if config is None:
        return
    kafka = config["kafka"]
    group = kafka["group"]
    topics = kafka["topics"]
    shutdown = duration_seconds(config.get("worker", {}).get("shutdown_timeout", "30s"))
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    check(grace > shutdown, f"{label}: terminationGracePeriodSeconds {grace} > worker.shutdown_timeout {shutdown:g}s")

    # Membership: static only where pod names are stable.
    instance = env.get("PYTHIA_KAFKA__CONSUMER__GROUP_INSTANCE_ID", {})
    raw_instance = {k.replace("_", ".") for k in kafka.get("consumer", {})} & {"group.instance.id"}
    check(not raw_instance, f"{label}: pythia.toml sets no group.instance.id (it belongs to the pods)")
    protocol = env.get("PYTHIA_KAFKA__GROUP_PROTOCOL", {}).get("value", kafka.get("group_protocol", "auto"))
    if kind == "StatefulSet":
        check(
            instance.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
            f"{label}: static membership: group.instance.id is the StatefulSet's stable pod name",
        )
        check(protocol == "classic", f"{label}: static members use the classic protocol ({protocol})")
        session = duration_seconds(env.get("PYTHIA_KAFKA__SESSION_TIMEOUT", {}).get("value", kafka.get("session_timeout", "45s")))
        check(session > grace, f"{label}: session_timeout {session:g}s outlasts a pod's stop ({grace}s grace)")
    else:
        check(not instance, f"{label}: the Deployment's members are dynamic (no group.instance.id: pod names change)")
        check(
            protocol == "consumer"
            or (protocol == "classic" and kafka.get("assignment_strategy") == "cooperative-sticky"),
            f"{label}: KIP-848, or classic with cooperative-sticky (group_protocol = {protocol!r})",
        )
        rolling = worker["spec"].get("strategy", {}).get("rollingUpdate", {})
        check(
            rolling.get("maxUnavailable") == 0 and rolling.get("maxSurge", 0) not in (0, "0%"),
            f"{label}: rollouts surge first (maxSurge {rolling.get('maxSurge')}, maxUnavailable {rolling.get('maxUnavailable')})",
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

    images = set()
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        for c in workload["spec"]["template"]["spec"]["containers"]:
            resources = c.get("resources", {})
            check(
                {"cpu", "memory"} <= set(resources.get("requests", {}))
                and {"cpu", "memory"} <= set(resources.get("limits", {})),
                f"{label}: {name}/{c['name']} has cpu and memory requests and limits",
            )
            image = c["image"]
            images.add(image)
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            check(
                "@sha256:" in image or (tag != "" and tag != "latest"),
                f"{label}: {name}/{c['name']} runs a pinned image ({image}), not a moving tag",
            )
        labels = workload["spec"]["template"]["metadata"]["labels"]
        check(matches(workload["spec"]["selector"], labels), f"{label}: {name} selector matches its pods")
    check(len(images) == 1, f"{label}: the worker and the exporter run the same image ({sorted(images)})")
    memory = container.get("resources", {}).get("requests", {}).get("memory", "")
    check(
        memory.endswith("Mi") and int(memory[:-2]) >= 320,
        f"{label}: the worker's memory request {memory} covers the measured peak RSS (~300 MiB)",
    )

    # Secrets: created out of band; every key used is in secret.example.yaml.
    example = secret_example()
    used: list[tuple[str, str, str]] = []
    for name, entry in env.items():
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            used.append((name, ref["name"], ref["key"]))
    for volume in pod["spec"].get("volumes", []):
        secret = volume.get("secret")
        if secret:
            for item in secret.get("items", []):
                used.append((f"volume {volume['name']}", secret["secretName"], item["key"]))
    for auth in (d for d in docs if d["kind"] == "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            used.append((f"KEDA parameter {ref['parameter']}", ref["name"], ref["key"]))
    for what, secret, key in used:
        check(key in example.get(secret, set()), f"{label}: {what} reads Secret {secret} key {key}, listed in secret.example.yaml")
    security = kafka.get("security", {})
    check("sasl_password" not in security, f"{label}: no password in the ConfigMap")

    # TLS: a configured CA file is mounted from the Secret.
    if str(security.get("protocol", "")).lower().endswith("ssl") and "ssl_ca_location" in security:
        ca = security["ssl_ca_location"]
        mounted = mounted_secret_file(pod, container, ca)
        check(mounted is not None, f"{label}: ssl_ca_location {ca} is a file of a mounted Secret ({mounted})")

    pdb = find(docs, "PodDisruptionBudget", WORKER)
    if check(pdb is not None and matches(pdb["spec"]["selector"], pod["metadata"]["labels"]), f"{label}: the PDB selects the workers"):
        check(
            pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"],
            f"{label}: the PDB lets one worker go at a time, whatever the replica count",
        )

    exporter = find(docs, "Deployment", "pythia-lag-exporter")
    if check(exporter is not None, f"{label}: has the lag exporter Deployment"):
        args = exporter["spec"]["template"]["spec"]["containers"][0]["args"]
        check(args[:1] == ["lag"] and "--serve" in args, f"{label}: the exporter runs `pythia lag --serve`")
        check(args[args.index("--group") + 1] == group, f"{label}: the exporter watches group {group}")
        # The same listener and security as the workers: their pythia.toml,
        # their Secret, no --brokers of its own.
        shared = worker_config(docs, exporter, f"{label} (exporter)")
        check(
            shared is not None and shared.get("kafka") == kafka and "--brokers" not in args,
            f"{label}: the exporter reads the workers' pythia.toml ([kafka] and [kafka.security]), no --brokers",
        )
        exporter_env = {e["name"]: e for e in exporter["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        for name in ("PYTHIA_KAFKA__SECURITY__SASL_USERNAME", "PYTHIA_KAFKA__SECURITY__SASL_PASSWORD"):
            if name in env:
                check(
                    exporter_env.get(name, {}).get("valueFrom") == env[name].get("valueFrom"),
                    f"{label}: the exporter takes {name} from the workers' Secret",
                )
        service = find(docs, "Service", "pythia-lag-exporter")
        check(
            service is not None and service["spec"]["selector"].items() <= exporter["spec"]["template"]["metadata"]["labels"].items(),
            f"{label}: the exporter Service selects the exporter",
        )

    alerts = ALERTS.read_text()
    for monitor in (d for d in docs if d["kind"] == "PodMonitor"):
        target = next(
            (d for d in workloads(docs) if matches(monitor["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])),
            None,
        )
        name = monitor["metadata"]["name"]
        if check(target is not None, f"{label}: PodMonitor {name} selects a workload's pods"):
            ports = {p.get("name") for c in target["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                check(endpoint.get("port") in ports, f"{label}: PodMonitor {name} scrapes a named port of its pods")
                jobs = [r.get("replacement") for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"]
                check(jobs == [target["metadata"]["name"]], f"{label}: PodMonitor {name} sets job={target['metadata']['name']}")
                check(f'job="{jobs[0] if jobs else ""}"' in alerts, f"{label}: the alert rules use job {jobs}")

    partitions = input_partitions()
    limit = min(partitions[t] for t in topics)
    replicas = worker["spec"].get("replicas")
    hpa = find(docs, "HorizontalPodAutoscaler", WORKER)
    scaled = find(docs, "ScaledObject", WORKER)
    check(not (hpa and scaled), f"{label}: at most one autoscaler")
    if hpa or scaled:
        check(kind == "Deployment", f"{label}: autoscaling only the Deployment (static members must not scale)")
        check(replicas is None, f"{label}: no `replicas` beside an autoscaler (it owns the count)")
    elif label != "base":
        check(
            replicas is not None and MIN_REPLICAS <= replicas <= limit,
            f"{label}: a fixed count between {MIN_REPLICAS} and the {limit} partitions ({replicas})",
        )
    if hpa:
        spec = hpa["spec"]
        check(spec["scaleTargetRef"]["name"] == WORKER, f"{label}: the HPA scales the worker")
        metric = spec["metrics"][0]["external"]["metric"]
        check(metric["selector"]["matchLabels"].get("group") == group, f"{label}: the HPA's lag metric is group {group}'s")
        adapter = yaml.safe_load((K8S / "autoscale-hpa" / "prometheus-adapter-values.yaml").read_text())
        names = [r["name"]["as"] for r in adapter["rules"]["external"]]
        check(metric["name"] in names, f"{label}: prometheus-adapter provides external metric {metric['name']}")
        for rule in adapter["rules"]["external"]:
            query = rule["metricsQuery"]
            check(
                "<<.Series>>" in query and "<<.LabelMatchers>>" in query
                and not aggregation_problems(query.replace("<<.Series>>{<<.LabelMatchers>>}", "m"), {"namespace"})
                and re.search(r"sum by \([^)]*\bgroup\b", query) is not None,
                f"{label}: the adapter rule sums lag by namespace and group over the selected series",
            )
    if scaled:
        spec = scaled["spec"]
        check(spec["scaleTargetRef"]["name"] == WORKER, f"{label}: the ScaledObject scales the worker")
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            check(trigger["type"] == "kafka" and "lagThreshold" in meta, f"{label}: a kafka trigger with lagThreshold")
            check(meta["consumerGroup"] == group and meta["topic"] in topics, f"{label}: KEDA watches group {group} on {meta['topic']}")
            check(meta["bootstrapServers"] == kafka["brokers"], f"{label}: KEDA reads the workers' brokers")
            for option, value in [("limitToPartitionsWithLag", "true"), ("excludePersistentLag", "true"), ("allowIdleConsumers", "false")]:
                check(meta.get(option) == value, f"{label}: KEDA's {option} is {value}")
            auth = find(docs, "TriggerAuthentication", trigger.get("authenticationRef", {}).get("name", ""))
            if check(auth is not None, f"{label}: the trigger's TriggerAuthentication exists"):
                parameters = {r["parameter"] for r in auth["spec"].get("secretTargetRef", [])}
                if str(security.get("protocol", "")).lower().startswith("sasl"):
                    check({"sasl", "username", "password"} <= parameters, f"{label}: KEDA authenticates with SASL like the workers")
                if "ssl_ca_location" in security:
                    check({"tls", "ca"} <= parameters, f"{label}: KEDA speaks TLS and trusts the workers' CA")
        fallback = spec.get("fallback", {})
        check(
            fallback.get("replicas") == spec.get("maxReplicaCount") and fallback.get("failureThreshold", 0) > 0,
            f"{label}: when KEDA cannot read the lag it falls back to the partition count",
        )


# ---------------------------------------------------------------- layout


def autoscaling(rendered: dict[str, list[dict]]) -> None:
    """The HPA and KEDA overlays scale alike: same bounds, target and behaviour."""
    hpa = next((d for d in rendered.get("autoscale-hpa", []) if d["kind"] == "HorizontalPodAutoscaler"), None)
    keda = next((d for d in rendered.get("autoscale-keda", []) if d["kind"] == "ScaledObject"), None)
    if not check(hpa is not None and keda is not None, "autoscaling: both autoscale-hpa and autoscale-keda exist"):
        return
    h, k = hpa["spec"], keda["spec"]
    config = tomllib.loads(find(rendered["autoscale-hpa"], "ConfigMap", "pythia-worker-config")["data"]["pythia.toml"])
    limit = min(input_partitions()[t] for t in config["kafka"]["topics"])
    check(h["minReplicas"] == k["minReplicaCount"] == MIN_REPLICAS, f"autoscaling: both keep at least {MIN_REPLICAS} replicas")
    check(
        h["maxReplicas"] == k["maxReplicaCount"] == limit,
        f"autoscaling: both stop at the {limit} partitions (HPA {h['maxReplicas']}, KEDA {k['maxReplicaCount']})",
    )
    keda_behavior = k.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    check(h.get("behavior") == keda_behavior, "autoscaling: the HPA and KEDA carry the same behaviour")
    check(h.get("behavior") == BEHAVIOR, "autoscaling: up 100 % every 15 s at once, down 50 % every 60 s after 300 s")
    target = h["metrics"][0]["external"]["target"]["averageValue"]
    thresholds = {t["metadata"]["lagThreshold"] for t in k["triggers"]}
    check(thresholds == {target}, f"autoscaling: the same lag per replica (HPA {target}, KEDA {sorted(thresholds)})")


def layout(rendered: dict[str, list[dict]], components: list[Path]) -> None:
    base = rendered.get("base", [])
    worker = find(base, "Deployment", WORKER)
    check(worker is not None and "replicas" not in worker["spec"], "base: the worker Deployment has no `replicas` (overlays and autoscalers own it)")
    for label, docs in rendered.items():
        secrets = [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
        check(not secrets, f"{label}: ships no Secret ({secrets}): it is created out of band")
    check(
        all(d.get("kind") == "Secret" for d in yaml.safe_load_all(SECRET_EXAMPLE.read_text()) if d)
        and not any(
            entry.endswith("secret.example.yaml")
            for file in K8S.glob("*/kustomization.yaml")
            for entry in yaml.safe_load(file.read_text()).get("resources", [])
        ),
        "secret.example.yaml is an example no kustomization applies",
    )
    static = rendered.get("static-membership", [])
    statefulset = find(static, "StatefulSet", WORKER)
    if check(statefulset is not None and find(static, "Deployment", WORKER) is None, "static-membership: the worker is a StatefulSet, not a Deployment"):
        service = find(static, "Service", statefulset["spec"].get("serviceName", ""))
        check(
            service is not None and service["spec"].get("clusterIP") == "None"
            and matches({"matchLabels": service["spec"]["selector"]}, statefulset["spec"]["template"]["metadata"]["labels"]),
            "static-membership: its governing Service is headless and selects its pods",
        )
        if worker is not None:
            ours = json.loads(json.dumps(statefulset["spec"]["template"]))
            for c in ours["spec"]["containers"]:
                c["env"] = [e for e in c.get("env", []) if e["name"] not in STATIC_MEMBERSHIP_ENV]
            theirs = worker["spec"]["template"]
            check(ours == theirs, "static-membership: the pod template is the base Deployment's plus static membership")
    names = {c.name for c in components}
    check("monitoring" in names, "deploy/k8s/monitoring is a kustomize Component")
    for label, docs in rendered.items():
        if label == "base":
            continue
        kinds = {d["kind"] for d in docs}
        check({"PodMonitor", "PrometheusRule"} <= kinds, f"{label}: includes the monitoring component")


def monitoring(docs: list[dict], label: str) -> None:
    """PodMonitors and rules selectable by kube-prometheus-stack; generated copies up to date."""
    operator = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    releases = {d["metadata"].get("labels", {}).get("release") for d in operator}
    check(
        len(releases) == 1 and None not in releases,
        f"{label}: PodMonitors and PrometheusRule carry one `release` label for kube-prometheus-stack ({releases})",
    )
    rules = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PrometheusRule"}
    expected_rules = {"pythia": ALERTS, "pythia-queues": QUEUE_ALERTS}
    check(set(rules) == set(expected_rules), f"{label}: PrometheusRules {sorted(expected_rules)} ({sorted(rules)})")
    for name, path in expected_rules.items():
        source = yaml.safe_load(path.read_text())["groups"]
        check(
            name in rules and rules[name]["spec"]["groups"] == source,
            f"{label}: PrometheusRule {name}'s groups are those of deploy/prometheus/{path.name} ({REGENERATE} after an edit)",
        )
    dashboards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    held = sorted(text for d in dashboards for text in d.get("data", {}).values())
    check(
        len(dashboards) == 2 and held == sorted([DASHBOARD.read_text(), QUEUE_DASHBOARD.read_text()]),
        f"{label}: ConfigMaps labelled grafana_dashboard=\"1\" hold dashboard.json and queues.json as they are ({REGENERATE} after an edit)",
    )


# ---------------------------------------------------------------- alert rules

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}
LABEL_DROPPING_FUNCTIONS = {"absent", "absent_over_time", "scalar", "vector"}
TOKEN = re.compile(
    r"""\s+|\#[^\n]*|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`"""
    r"""|\{[^}]*\}|\[[^\]]*\]|[A-Za-z_:][A-Za-z0-9_:]*|\d+(?:\.\d+)?(?:[a-z]+)?|[(),]|[-+*/%^<>=!~@]+"""
)


def tokens(expr: str) -> list[str]:
    out, at = [], 0
    while at < len(expr):
        match = TOKEN.match(expr, at)
        if not match:
            raise ValueError(f"cannot read PromQL at {expr[at:at + 20]!r}")
        text = match.group(0)
        if not text.isspace() and not text.startswith("#"):
            out.append(text)
        at = match.end()
    return out


def closing(toks: list[str], at: int) -> int:
    """The index of the `)` that closes the `(` at `at`."""
    depth = 0
    for i in range(at, len(toks)):
        depth += {"(": 1, ")": -1}.get(toks[i], 0)
        if depth == 0:
            return i
    raise ValueError("unbalanced parentheses")


def label_list(toks: list[str], at: int) -> tuple[set[str], int]:
    """The labels of the `( a, b )` at `at`, and the index after it."""
    end = closing(toks, at)
    return {t for t in toks[at + 1:end] if t != ","}, end + 1


def aggregation_problems(expr: str, kept: set[str] = KEPT_LABELS) -> list[str]:
    """Each aggregation or join of `expr` that drops a label of `kept`."""
    toks = tokens(expr)
    problems = []
    for i, tok in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if tok in AGGREGATIONS and nxt in ("(", "by", "without"):
            if nxt in ("by", "without"):
                clause, (labels, _) = nxt, label_list(toks, i + 2)
            else:
                after = closing(toks, i + 1) + 1
                clause = toks[after] if after < len(toks) and toks[after] in ("by", "without") else None
                labels = label_list(toks, after + 1)[0] if clause else set()
            if clause is None:
                problems.append(f"`{tok}` without `by`: it drops every label")
            elif clause == "by" and not kept <= labels:
                problems.append(f"`{tok} by ({', '.join(sorted(labels))})` drops {sorted(kept - labels)}")
            elif clause == "without" and labels & kept:
                problems.append(f"`{tok} without ({', '.join(sorted(labels))})` drops {sorted(labels & kept)}")
        elif tok == "on" and nxt == "(":
            labels, _ = label_list(toks, i + 1)
            if not kept <= labels:
                problems.append(f"`on ({', '.join(sorted(labels))})` matches across {sorted(kept - labels)}")
        elif tok in LABEL_DROPPING_FUNCTIONS and nxt == "(":
            problems.append(f"`{tok}(...)` drops every label")
    return problems


def alert_rules() -> None:
    for rules_file, tests_file in ((ALERTS, ALERT_TESTS), (QUEUE_ALERTS, QUEUE_ALERT_TESTS)):
        alert_rule_file(rules_file, tests_file)


def alert_rule_file(rules_file: Path, tests_file: Path) -> None:
    rules = yaml.safe_load(rules_file.read_text())
    tests = yaml.safe_load(tests_file.read_text())
    check(tests.get("rule_files") == [rules_file.name], f"{tests_file.name} tests {rules_file.name}")
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    rules_name, tests_name = rules_file.name, tests_file.name
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            try:
                problems = aggregation_problems(rule["expr"])
            except ValueError as error:
                problems = [f"cannot read the expression: {error}"]
            check(not problems, f"{rules_name}: {name} keeps {sorted(KEPT_LABELS)} in every aggregation and join {problems}")
            if rule.get("alert") is None:
                continue
            mine = [c for c in cases if c["alertname"] == name]
            check(any(c.get("exp_alerts") for c in mine), f"{tests_name}: {name} fires")
            check(any(not c.get("exp_alerts") for c in mine), f"{tests_name}: {name} stays quiet")
            check(
                {"summary", "runbook"} <= set(rule.get("annotations", {})),
                f"{rules_name}: {name} has a summary and a runbook",
            )


# ---------------------------------------------------------------- compose


def compose_checks() -> None:
    directory = DEPLOY / "docker"
    compose = yaml.safe_load((directory / "docker-compose.yml").read_text())
    services = compose["services"]
    worker = services["worker"]
    check("container_name" not in worker and "ports" not in worker, "compose: worker scales (no container_name, no published ports)")
    for name, service in services.items():
        for port in service.get("ports", []):
            check(
                isinstance(port, str) and port.startswith("127.0.0.1:"),
                f"compose: {name} publishes {port} on the loopback address only",
            )
    password = services["grafana"]["environment"].get("GF_SECURITY_ADMIN_PASSWORD", "")
    check(
        re.fullmatch(r"\$\{[A-Z_]+:\?[^}$]+\}", str(password)) is not None,
        "compose: Grafana's admin password comes from a variable that must be set (${VAR:?message})",
    )
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

    # Profile rabbitmq: the job workers scale too, on the queue the enqueue
    # one-shot fills, with the broker's password in one place.
    jobs = services["jobs-worker"]
    check(
        "container_name" not in jobs and "ports" not in jobs and jobs.get("profiles") == ["rabbitmq"],
        "compose: jobs-worker scales (no container_name, no published ports), in profile rabbitmq",
    )
    check(
        jobs["depends_on"]["rabbitmq"]["condition"] == "service_healthy",
        "compose: job workers start once RabbitMQ answers its health check",
    )
    shutdown = duration_seconds(jobs["environment"].get("PYTHIA_WORKER__SHUTDOWN_TIMEOUT", "30s"))
    check(duration_seconds(jobs.get("stop_grace_period", "10s")) > shutdown, "compose: jobs-worker stop_grace_period > worker.shutdown_timeout")
    enqueue = services["jobs-enqueue"]
    check(
        jobs["environment"]["PYTHIA_RABBITMQ__QUEUE"] == enqueue["environment"]["PYTHIA_RABBITMQ__QUEUE"]
        and jobs["environment"]["JOBS_NAMESPACE"] == enqueue["environment"]["JOBS_NAMESPACE"],
        "compose: the enqueue one-shot fills the workers' queue and reports their namespace",
    )
    password = services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"]
    check(
        f"pythia:{password}@rabbitmq:5672" in jobs["environment"]["PYTHIA_RABBITMQ__URL"],
        "compose: the job workers log in with RabbitMQ's configured user and password",
    )
    check(
        all(not p.endswith(":5672") for p in services["rabbitmq"].get("ports", [])),
        "compose: AMQP is not published (only the management UI, on loopback)",
    )

    # Profile redis: strategy workers scale on the list the one-shot fills.
    strategy = services["strategy-worker"]
    check(
        "container_name" not in strategy and "ports" not in strategy and strategy.get("profiles") == ["redis"],
        "compose: strategy-worker scales (no container_name, no published ports), in profile redis",
    )
    check("redis" in services["redis"].get("profiles", []), "compose: Redis runs in profile redis")
    check(
        strategy["environment"]["PYTHIA_REDIS__MODE"] == "list"
        and strategy["environment"]["PYTHIA_REDIS__INPUT"] == services["strategy-enqueue"]["environment"]["PYTHIA_REDIS__INPUT"],
        "compose: the strategy one-shot fills the list the workers read",
    )
    shutdown = duration_seconds(strategy["environment"].get("PYTHIA_WORKER__SHUTDOWN_TIMEOUT", "30s"))
    check(duration_seconds(strategy.get("stop_grace_period", "10s")) > shutdown, "compose: strategy-worker stop_grace_period > worker.shutdown_timeout")

    # Profile nats: a pool per queue, each scaled on its own, after JetStream answers.
    pools = {name: services[f"{name}-worker"] for name in ("general", "cpu", "io")}
    for name, pool in pools.items():
        check(
            "container_name" not in pool and "ports" not in pool and pool.get("profiles") == ["nats"]
            and pool["command"] == ["worker", name],
            f"compose: {name}-worker scales (no container_name, no published ports), in profile nats, on queue {name}",
        )
        check(pool["depends_on"]["nats"]["condition"] == "service_healthy", f"compose: {name}-worker starts once JetStream answers")
        shutdown = duration_seconds(pool["environment"].get("PYTHIA_WORKER__SHUTDOWN_TIMEOUT", "30s"))
        check(duration_seconds(pool.get("stop_grace_period", "10s")) > shutdown, f"compose: {name}-worker stop_grace_period > worker.shutdown_timeout")
    nats = services["nats"]
    check("-js" in nats["command"], "compose: NATS runs with JetStream")
    check(
        all(not p.endswith(":4222") for p in nats.get("ports", [])),
        "compose: NATS's client port is not published (only the monitoring endpoint, on loopback)",
    )
    enqueue = services["nats-enqueue"]
    check(
        enqueue["command"][:2] == ["enqueue", "io"] and enqueue["environment"]["JOBS_PREFIX"] == pools["io"]["environment"]["JOBS_PREFIX"],
        "compose: the NATS one-shot fills the io pool's queue",
    )

    prometheus = yaml.safe_load((directory / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    check(set(jobs) == {"pythia-worker", "pythia-lag-exporter", QUEUE_JOB}, "compose: Prometheus scrapes the workers, the exporter and the queue workers with the alert rules' job names")
    queue_services = {"jobs-worker", "strategy-worker", *(f"{name}-worker" for name in pools)}
    queue_dns = jobs.get(QUEUE_JOB, {}).get("dns_sd_configs", [{}])[0]
    check(
        set(queue_dns.get("names", [])) == queue_services
        and all(str(queue_dns.get("port")) == services[name]["environment"]["PYTHIA_METRICS__ADDRESS"].rsplit(":", 1)[1] for name in queue_services),
        f"compose: {QUEUE_JOB} finds every queue worker service by DNS at its metrics.address port",
    )
    check(f'job="{QUEUE_JOB}"' in QUEUE_ALERTS.read_text(), f"compose: queue_alerts.yml uses job {QUEUE_JOB}")
    dns = jobs["pythia-worker"].get("dns_sd_configs", [{}])[0]
    port = worker["environment"]["PYTHIA_METRICS__ADDRESS"].rsplit(":", 1)[1]
    check(dns.get("names") == ["worker"] and str(dns.get("port")) == port, "compose: workers found by DNS on the service name at metrics.address's port")
    serve = exporter["command"][exporter["command"].index("--serve") + 1].rsplit(":", 1)[1]
    check(jobs["pythia-lag-exporter"]["static_configs"][0]["targets"] == [f"lag-exporter:{serve}"], "compose: the exporter's target is its --serve port")
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    loaded = [Path(mounted.get(rule, "")).name for rule in prometheus["rule_files"]]
    check(
        sorted(loaded) == sorted([ALERTS.name, QUEUE_ALERTS.name]),
        f"compose: Prometheus loads alerts.yml and queue_alerts.yml ({loaded})",
    )

    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "pythia.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    for board in (DASHBOARD, QUEUE_DASHBOARD):
        check(
            any(target.startswith(path + "/") and Path(source).name == board.name for target, source in grafana.items()),
            f"compose: Grafana's dashboard provider path holds {board.name}",
        )
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    url = datasources["datasources"][0]["url"]
    check(re.match(r"http://prometheus:9090/?$", url) is not None and "prometheus" in services, "compose: Grafana's data source is the prometheus service")


# ---------------------------------------------------------------- dashboard


def dashboard_checks() -> None:
    uids = set()
    for path in (DASHBOARD, QUEUE_DASHBOARD):
        uid = dashboard_file(path)
        check(uid not in uids, f"{path.name}: a uid of its own ({uid})")
        uids.add(uid)


def dashboard_file(path: Path) -> str | None:
    try:
        dashboard = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        check(False, f"{path.name} is valid JSON: {error}")
        return None
    check(True, f"{path.name} is valid JSON")
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    builtins = {"__rate_interval", "__interval", "__range"}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    check(len(ids) == len(set(ids)), f"{path.name}: panel ids are unique")
    for panel in panels:
        title = panel["title"]
        check(panel["datasource"]["type"] == "prometheus", f"{path.name}: {title!r} uses the Prometheus data source")
        check(bool(panel["targets"]) and all(t.get("expr") for t in panel["targets"]), f"{path.name}: {title!r} has queries")
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            check(used <= variables | builtins, f"{path.name}: {title!r} uses only defined variables ({sorted(used - variables - builtins)} undefined)")
    return dashboard.get("uid")


QUEUE_BROKERS = {
    # directory: (pythia.toml section, the variable that carries the URL, the
    # section's key naming what the workers consume, the overlays it has)
    "rabbitmq": ("rabbitmq", "PYTHIA_RABBITMQ__URL", "queue", {"base", "autoscale-hpa", "autoscale-keda"}),
    "redis": ("redis", "PYTHIA_REDIS__URL", "input", {"base", "autoscale-keda", "autoscale-keda-streams"}),
    "nats": ("nats", "PYTHIA_NATS__URL", "subject", {"base", "autoscale-keda"}),
}


def broker_secret_example(broker: str) -> dict[str, set[str]]:
    """Secret name -> keys, from deploy/k8s/<broker>/secret.example.yaml."""
    example: dict[str, set[str]] = {}
    for doc in yaml.safe_load_all((K8S / broker / "secret.example.yaml").read_text()):
        if doc and doc.get("kind") == "Secret":
            example.setdefault(doc["metadata"]["name"], set()).update(doc.get("stringData", {}))
    return example


def queue_agreement(docs: list[dict], label: str, broker: str) -> dict | None:
    """A queue broker's worker pieces agree; returns its pythia.toml."""
    section, url_variable, consumed, _ = QUEUE_BROKERS[broker]
    worker = find(docs, "Deployment", WORKER)
    if not check(worker is not None, f"{label}: has the {WORKER} Deployment"):
        return None
    pod = worker["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    config = worker_config(docs, worker, label)
    if config is None:
        return None
    settings = config.get(section, {})
    check(bool(settings.get(consumed)), f"{label}: pythia.toml names what the workers consume ({section}.{consumed})")
    check("url" not in settings, f"{label}: no broker URL (it holds the password) in the ConfigMap")
    url = env.get(url_variable, {}).get("valueFrom", {}).get("secretKeyRef")
    example = broker_secret_example(broker)
    check(
        url is not None and url["key"] in example.get(url["name"], set()),
        f"{label}: {url_variable} comes from a Secret key listed in {broker}/secret.example.yaml",
    )
    for auth in (d for d in docs if d["kind"] == "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            check(
                ref["key"] in example.get(ref["name"], set()),
                f"{label}: KEDA parameter {ref['parameter']} reads a Secret key listed in {broker}/secret.example.yaml",
            )
    address = env.get("PYTHIA_METRICS__ADDRESS", {}).get("value", "")
    port = next((p for p in container.get("ports", []) if p.get("name") == "metrics"), {})
    check(address.endswith(f":{port.get('containerPort')}"), f"{label}: the metrics port is metrics.address's ({address})")
    for probe, path in [("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")]:
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "metrics", f"{label}: {probe} on {path}")
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    shutdown = duration_seconds(config.get("worker", {}).get("shutdown_timeout", "30s"))
    check(grace > shutdown, f"{label}: grace period {grace}s above worker.shutdown_timeout {shutdown}s")
    return config


def keda_policy(keda: dict, label: str) -> None:
    """A queue worker's KEDA overlay scales as the others do."""
    spec = keda["spec"]
    check(spec["minReplicaCount"] == MIN_REPLICAS, f"{label}: KEDA keeps at least {MIN_REPLICAS} replicas")
    check(
        spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior") == BEHAVIOR,
        f"{label}: KEDA scales up 100 % every 15 s at once, down 50 % every 60 s after 300 s",
    )


def rabbit_scaling(rendered: dict[str, list[dict]], queue: str | None) -> None:
    """KEDA and the HPA scale the RabbitMQ worker alike, on the worker's queue."""
    keda = find(rendered.get("rabbitmq/autoscale-keda", []), "ScaledObject", WORKER)
    hpa = find(rendered.get("rabbitmq/autoscale-hpa", []), "HorizontalPodAutoscaler", WORKER)
    if not check(keda is not None and hpa is not None, "rabbitmq: the KEDA and HPA overlays scale the worker"):
        return
    trigger = keda["spec"]["triggers"][0]
    meta = trigger["metadata"]
    check(trigger["type"] == "rabbitmq" and meta.get("queueName") == queue, f"rabbitmq: KEDA watches queue {queue}")
    check(
        meta.get("protocol") == "http" and meta.get("mode") == "QueueLength",
        "rabbitmq: KEDA counts over the management API (ready and unacknowledged), not AMQP (ready only)",
    )
    external = hpa["spec"]["metrics"][0]["external"]
    check(external["metric"].get("selector", {}).get("matchLabels", {}).get("queue") == queue, f"rabbitmq: the HPA watches queue {queue}")
    check(str(external["target"]["averageValue"]) == str(meta.get("value")), "rabbitmq: KEDA and the HPA have the same target per replica")
    check(
        (keda["spec"]["minReplicaCount"], keda["spec"]["maxReplicaCount"]) == (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]),
        "rabbitmq: KEDA and the HPA have the same bounds",
    )
    check(
        keda["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"],
        "rabbitmq: KEDA and the HPA have the same behaviour",
    )
    keda_policy(keda, "rabbitmq/autoscale-keda")


def redis_scaling(docs: list[dict], label: str, config: dict) -> None:
    """KEDA watches what the Redis workers read: the list, or the group's lag."""
    keda = find(docs, "ScaledObject", WORKER)
    if not check(keda is not None, f"{label}: a KEDA ScaledObject scales the worker"):
        return
    redis = config.get("redis", {})
    trigger = keda["spec"]["triggers"][0]
    meta = trigger["metadata"]
    if label.endswith("-streams"):
        group = redis.get("group") or config.get("worker", {}).get("name")
        check(redis.get("mode") == "stream", f"{label}: the workers read a stream in a consumer group")
        check(
            trigger["type"] == "redis-streams" and meta.get("stream") == redis.get("input") and meta.get("consumerGroup") == group,
            f"{label}: KEDA watches group {group} on stream {redis.get('input')}",
        )
        check(bool(meta.get("lagCount")), f"{label}: KEDA scales on the group's lag (lagCount)")
    else:
        check(redis.get("mode") == "list", f"{label}: the workers read a list queue")
        check(
            trigger["type"] == "redis" and meta.get("listName") == redis.get("input") and bool(meta.get("listLength")),
            f"{label}: KEDA watches the length of list {redis.get('input')}",
        )
    keda_policy(keda, label)


def nats_scaling(docs: list[dict], label: str, config: dict) -> None:
    """KEDA watches the durable consumer the NATS workers share."""
    keda = find(docs, "ScaledObject", WORKER)
    if not check(keda is not None, f"{label}: a KEDA ScaledObject scales the worker"):
        return
    nats = config.get("nats", {})
    trigger = keda["spec"]["triggers"][0]
    meta = trigger["metadata"]
    stream = nats.get("stream") or nats.get("subject", "").replace(".", "_")
    check(
        trigger["type"] == "nats-jetstream" and meta.get("stream") == stream and meta.get("consumer") == nats.get("consumer"),
        f"{label}: KEDA watches consumer {nats.get('consumer')} of stream {stream}",
    )
    check(bool(meta.get("lagThreshold")), f"{label}: KEDA has a target per replica (lagThreshold)")
    keda_policy(keda, label)


def queue_checks(kubectl: str, crs: list[dict], broker: str) -> None:
    """deploy/k8s/<broker>: every overlay renders, validates and agrees."""
    expected = QUEUE_BROKERS[broker][3]
    directories = sorted(f.parent for f in (K8S / broker).glob("*/kustomization.yaml"))
    check({d.name for d in directories} >= expected, f"deploy/k8s/{broker} has every overlay")
    rendered: dict[str, list[dict]] = {}
    consumed = None
    for directory in directories:
        docs = render(kubectl, directory)
        if docs is None:
            continue
        label = directory.relative_to(K8S).as_posix()
        rendered[label] = docs
        print(f"== {label}: {len(docs)} resources")
        validate(docs, label, crs)
        config = queue_agreement(docs, label, broker)
        if config is None:
            continue
        worker = find(docs, "Deployment", WORKER)
        if directory.name == "base":
            check("replicas" not in worker["spec"], f"{label}: no `replicas` (the overlays own it)")
            continue
        consumed = config.get(QUEUE_BROKERS[broker][0], {}).get(QUEUE_BROKERS[broker][2])
        if broker == "redis":
            redis_scaling(docs, label, config)
        elif broker == "nats":
            nats_scaling(docs, label, config)
    if broker == "rabbitmq":
        rabbit_scaling(rendered, consumed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crd-json", type=Path, help="write the custom resources here for crds.mjs")
    args = parser.parse_args()
    kubectl = shutil.which("kubectl")
    if not check(kubectl is not None, "kubectl is installed (it renders the kustomizations)"):
        return 1
    version = kustomize_version(kubectl)
    if not check(
        version is not None and version >= (4,),
        f"kubectl's kustomize is v4 or later, for `components` (found {version})",
    ):
        print("     Debian's kubernetes-client (bookworm: kubectl 1.20, kustomize v2) is too old: install a kubectl of 1.21 or later")
        return 1
    crs: list[dict] = []
    directories, components = kustomizations()
    check({d.name for d in directories} >= {"base", "fixed", "autoscale-hpa", "autoscale-keda", "static-membership"}, "deploy/k8s has every overlay")
    rendered: dict[str, list[dict]] = {}
    for directory in directories:
        docs = render(kubectl, directory)
        if docs is None:
            continue
        label = directory.name
        rendered[label] = docs
        print(f"== {label}: {len(docs)} resources")
        validate(docs, label, crs)
        agreement(docs, label)
        if label != "base":
            monitoring(docs, label)
    for broker in QUEUE_BROKERS:
        queue_checks(kubectl, crs, broker)
    print("== layout")
    layout(rendered, components)
    autoscaling(rendered)
    print("== docker compose")
    compose_checks()
    print("== dashboard")
    dashboard_checks()
    print("== alert rules")
    alert_rules()
    if args.crd_json:
        args.crd_json.write_text(json.dumps(crs, indent=1))
        print(f"{len(crs)} custom resources written to {args.crd_json}")
    print(f"{len(failures)} failed" if failures else "all deploy checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
