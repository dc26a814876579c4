// Validates custom resources against the CRD schemas shipped in the
// @kubernetes-models packages (generated from KEDA's and prometheus-operator's
// CRDs): types, required fields, enums. Those compiled schemas accept unknown
// fields; k8s.py checks the keys of these resources' specs against lists of
// the fields that exist.
//
//   node crds.mjs resources.json   # a JSON array of resources
import { readFileSync } from "node:fs";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
};

const resources = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const resource of resources) {
  const key = `${resource.apiVersion}/${resource.kind}`;
  const name = `${resource.kind}/${resource.metadata?.name} (${resource.source})`;
  const Model = models[key];
  const { source, ...body } = resource;
  if (!Model) {
    console.log(`FAIL ${name}: no CRD schema known for ${key}`);
    failed++;
    continue;
  }
  try {
    new Model(body).validate();
    console.log(`ok   ${name} against the ${key} CRD schema`);
  } catch (error) {
    console.log(`FAIL ${name}: ${error.message}`);
    failed++;
  }
}
if (failed > 0) {
  console.log(`${failed} custom resource(s) failed`);
  process.exit(1);
}
