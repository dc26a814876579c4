//! The consumer name of an instance: its identity in the stream's consumer
//! group, and the suffix of its processing list and heartbeat in list mode.
//!
//! A name must be unique among the live instances (two instances sharing one
//! would share one pending list, and each would keep the other's entries
//! alive), and is best stable across restarts of one instance (a restarted
//! pod then finds its own entries again). `redis.consumer` wins; else
//! `worker.instance`; else in Kubernetes the pod's name (`HOSTNAME`, unique
//! among the pods of a Deployment and kept across container restarts); else
//! `<host>-<pid>`. Outside Kubernetes `HOSTNAME` alone is not used: every
//! copy started from one shell on one machine would have the same.

/// The consumer name, from the settings and the environment (`var` reads a
/// variable; `host_pid` is the `<host>-<pid>` fallback).
pub(crate) fn consumer_name(
    configured: Option<&str>,
    instance: Option<&str>,
    var: impl Fn(&str) -> Option<String>,
    host_pid: impl FnOnce() -> String,
) -> String {
    let set = |value: Option<&str>| {
        value
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    if let Some(name) = set(configured).or_else(|| set(instance)) {
        return name;
    }
    let in_kubernetes = var("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty());
    if in_kubernetes && let Some(pod) = set(var("HOSTNAME").as_deref()) {
        return pod;
    }
    host_pid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_then_the_instance_then_the_pod_then_host_and_pid() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let pod: &[(&str, &str)] = &[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("HOSTNAME", "jobs-7d9f-x2k"),
        ];
        let shell: &[(&str, &str)] = &[("HOSTNAME", "laptop")];
        let fallback = || "laptop-4242".to_owned();
        /// (redis.consumer, worker.instance, environment, expected name)
        type Row<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            &'a [(&'a str, &'a str)],
            &'a str,
        );
        let table: [Row<'_>; 6] = [
            (Some("c1"), Some("i1"), pod, "c1"),
            (Some("  "), Some("i1"), pod, "i1"),
            (None, None, pod, "jobs-7d9f-x2k"),
            (None, None, shell, "laptop-4242"),
            (None, None, &[], "laptop-4242"),
            (None, Some(" i2 "), shell, "i2"),
        ];
        for (configured, instance, vars, expected) in table {
            assert_eq!(
                consumer_name(configured, instance, env(vars), fallback),
                expected,
                "{configured:?} {instance:?} {vars:?}"
            );
        }
    }
}
