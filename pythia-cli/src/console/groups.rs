//! Consumer groups as the broker describes them (DescribeGroups): state,
//! members with their client id and host, and each member's assigned
//! partitions decoded from the consumer protocol's assignment.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::groups::GroupList;
use std::time::Duration;

/// Every group the broker lists, and those of `named` it describes when
/// asked by name (some brokers list no group but describe one), as JSON for
/// the page.
pub(crate) fn describe(
    client: &BaseConsumer,
    timeout: Duration,
    named: &[String],
) -> anyhow::Result<serde_json::Value> {
    let listed = client.fetch_group_list(None, timeout);
    let mut found: Vec<GroupList> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let first_error = match listed {
        Ok(list) => {
            names.extend(list.groups().iter().map(|g| g.name().to_owned()));
            found.push(list);
            None
        }
        Err(error) => Some(error),
    };
    for name in named.iter().filter(|n| !names.contains(n)) {
        if let Ok(list) = client.fetch_group_list(Some(name), timeout) {
            found.push(list);
        }
    }
    if found.is_empty()
        && let Some(error) = first_error
    {
        return Err(error.into());
    }
    let mut groups: Vec<serde_json::Value> = found
        .iter()
        .flat_map(|list| list.groups())
        // Describing an unknown group answers a "Dead" one with no member;
        // the console's and the lag reader's own helpers are not groups to watch.
        .filter(|g| !(g.state() == "Dead" && g.members().is_empty()))
        .filter(|g| !g.name().starts_with("pythia-lag") && !g.name().starts_with("pythia-console"))
        .map(|g| {
            let mut members: Vec<serde_json::Value> = g
                .members()
                .iter()
                .map(|m| {
                    let assigned = m.assignment().map(assignment).unwrap_or_default();
                    serde_json::json!({
                        "member_id": m.id(),
                        "client_id": m.client_id(),
                        "host": m.client_host(),
                        "assigned": assigned
                            .iter()
                            .map(|(topic, partitions)| serde_json::json!({"topic": topic, "partitions": partitions}))
                            .collect::<Vec<_>>(),
                    })
                })
                .collect();
            members.sort_by(|a, b| a["client_id"].as_str().cmp(&b["client_id"].as_str()));
            serde_json::json!({
                "group": g.name(),
                "state": g.state(),
                "protocol_type": g.protocol_type(),
                "protocol": g.protocol(),
                "members": members,
            })
        })
        .collect();
    groups.sort_by(|a, b| a["group"].as_str().cmp(&b["group"].as_str()));
    Ok(serde_json::Value::Array(groups))
}

/// Groups assembled from instances' `/status`: each reachable instance is a
/// member of its group, its host the address it was reached at.
pub(crate) fn from_instances(statuses: &[serde_json::Value]) -> serde_json::Value {
    let mut groups: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
    for status in statuses.iter().filter(|s| s["reachable"] == true) {
        let mut by_topic: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        for a in status["assigned"].as_array().into_iter().flatten() {
            if let (Some(topic), Some(partition)) = (a["topic"].as_str(), a["partition"].as_i64()) {
                by_topic
                    .entry(topic.to_owned())
                    .or_default()
                    .push(partition);
            }
        }
        let group = status["group"].as_str().unwrap_or_default().to_owned();
        groups.entry(group).or_default().push(serde_json::json!({
            "member_id": null,
            "client_id": status["client_id"],
            "host": status["address"],
            "assigned": by_topic
                .into_iter()
                .map(|(topic, partitions)| serde_json::json!({"topic": topic, "partitions": partitions}))
                .collect::<Vec<_>>(),
        }));
    }
    groups
        .into_iter()
        .map(|(group, members)| {
            let state = if members.is_empty() {
                "Empty"
            } else {
                "Stable"
            };
            serde_json::json!({
                "group": group,
                "state": state,
                "protocol_type": "consumer",
                "protocol": "",
                "members": members,
            })
        })
        .collect()
}

/// The topics and partitions of a consumer-protocol assignment:
/// `version: i16, [topic: string, [partition: i32]], user_data: bytes`.
/// Anything that does not parse is no assignment.
pub(crate) fn assignment(bytes: &[u8]) -> Vec<(String, Vec<i32>)> {
    let mut reader = Reader(bytes);
    let parse = |r: &mut Reader<'_>| -> Option<Vec<(String, Vec<i32>)>> {
        r.i16()?;
        let topics = r.i32()?;
        let mut out = Vec::new();
        for _ in 0..topics.max(0) {
            let len = usize::try_from(r.i16()?).ok()?;
            let topic = String::from_utf8(r.take(len)?.to_vec()).ok()?;
            let count = r.i32()?;
            let mut partitions = Vec::new();
            for _ in 0..count.max(0) {
                partitions.push(r.i32()?);
            }
            partitions.sort_unstable();
            out.push((topic, partitions));
        }
        Some(out)
    };
    parse(&mut reader).unwrap_or_default()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut out = vec![0, 1];
        out.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            out.extend((topic.len() as i16).to_be_bytes());
            out.extend(topic.as_bytes());
            out.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                out.extend(p.to_be_bytes());
            }
        }
        out.extend((-1i32).to_be_bytes()); // no user data
        out
    }

    #[test]
    fn an_assignment_decodes_to_topics_and_sorted_partitions() {
        let bytes = encode(&[("orders", &[3, 1]), ("refunds", &[0])]);
        assert_eq!(
            assignment(&bytes),
            [
                ("orders".to_owned(), vec![1, 3]),
                ("refunds".to_owned(), vec![0])
            ]
        );
    }

    #[test]
    fn instances_make_up_their_groups_when_the_broker_cannot() {
        let statuses = [
            serde_json::json!({"reachable": true, "group": "billing", "client_id": "billing-1", "address": "h:2",
                "assigned": [{"topic": "orders", "partition": 2}, {"topic": "orders", "partition": 3}]}),
            serde_json::json!({"reachable": false, "address": "h:3", "assigned": []}),
            serde_json::json!({"reachable": true, "group": "billing", "client_id": "billing-0", "address": "h:1",
                "assigned": [{"topic": "orders", "partition": 0}]}),
        ];
        let groups = from_instances(&statuses);
        assert_eq!(groups.as_array().unwrap().len(), 1);
        let members = groups[0]["members"].as_array().unwrap();
        assert_eq!(members.len(), 2, "the unreachable one is not a member");
        assert_eq!(members[0]["client_id"], "billing-1");
        assert_eq!(members[0]["host"], "h:2");
        assert_eq!(
            members[0]["assigned"][0]["partitions"],
            serde_json::json!([2, 3])
        );
    }

    #[test]
    fn a_cut_or_empty_assignment_is_no_assignment() {
        let bytes = encode(&[("orders", &[3, 1])]);
        assert!(assignment(&bytes[..9]).is_empty());
        assert!(assignment(&[]).is_empty());
    }
}
