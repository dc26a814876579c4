//! Transaction control markers in a partition's log.
//!
//! A transactional producer's commit leaves a control record (a commit
//! marker) after the transaction's messages: an offset that no consumer is
//! handed. Apache Kafka writes it on `EndTxn`; librdkafka's mock cluster
//! accepts transactions but writes none. [`append_commit_marker`] writes the
//! same bytes Kafka would, a control batch holding one commit record, with a
//! plain Produce request, so that a test can end a partition with a marker on
//! any broker that stores what it is sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Record batch attributes: transactional (0x10) and control (0x20).
const CONTROL_TRANSACTIONAL: i16 = 0x30;
/// Control record type of a commit marker (0 is abort).
const COMMIT: i16 = 1;
const PRODUCE: i16 = 0;
/// Produce v3: the first version that carries record batches v2, and not
/// yet a flexible (tagged-field) version.
const PRODUCE_VERSION: i16 = 3;

/// Appends a commit marker to `topic`/`partition` on its leader and returns
/// the marker's offset.
pub fn append_commit_marker(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    let leader = leader_address(bootstrap, topic, partition);
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let batch = commit_marker_batch(4242, 0, stamp);
    let request = produce_request(topic, partition, &batch);
    let mut stream = TcpStream::connect(&leader).unwrap_or_else(|e| panic!("{leader}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream.write_all(&request).expect("send Produce");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("Produce response size");
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).expect("Produce response");
    let (error, offset) = parse_produce_response(&response);
    assert_eq!(
        error, 0,
        "the broker refused the commit marker (Kafka error code {error})"
    );
    offset
}

fn leader_address(bootstrap: &str, topic: &str, partition: i32) -> String {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("metadata client");
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    let leader = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
        .map(|p| p.leader())
        .unwrap_or_else(|| panic!("no leader for {topic}/{partition}"));
    let broker = metadata
        .brokers()
        .iter()
        .find(|b| b.id() == leader)
        .unwrap_or_else(|| panic!("leader {leader} not in the metadata"));
    format!("{}:{}", broker.host(), broker.port())
}

/// A v2 record batch holding one commit control record.
fn commit_marker_batch(producer_id: i64, producer_epoch: i16, timestamp: i64) -> Vec<u8> {
    let mut record = vec![0u8]; // attributes
    varint(&mut record, 0); // timestamp delta
    varint(&mut record, 0); // offset delta
    let key = [0i16.to_be_bytes(), COMMIT.to_be_bytes()].concat(); // version, type
    varint(&mut record, key.len() as i64);
    record.extend(key);
    let value = [&0i16.to_be_bytes()[..], &0i32.to_be_bytes()].concat(); // version, coordinator epoch
    varint(&mut record, value.len() as i64);
    record.extend(value);
    varint(&mut record, 0); // headers

    // Everything from the attributes on is covered by the CRC.
    let mut covered = Vec::new();
    covered.extend(CONTROL_TRANSACTIONAL.to_be_bytes());
    covered.extend(0i32.to_be_bytes()); // last offset delta
    covered.extend(timestamp.to_be_bytes()); // base timestamp
    covered.extend(timestamp.to_be_bytes()); // max timestamp
    covered.extend(producer_id.to_be_bytes());
    covered.extend(producer_epoch.to_be_bytes());
    covered.extend((-1i32).to_be_bytes()); // base sequence
    covered.extend(1i32.to_be_bytes()); // record count
    varint(&mut covered, record.len() as i64);
    covered.extend(record);

    let mut batch = Vec::new();
    batch.extend(0i64.to_be_bytes()); // base offset, assigned by the broker
    let length = 4 + 1 + 4 + covered.len(); // leader epoch, magic, crc, rest
    batch.extend((length as i32).to_be_bytes());
    batch.extend((-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend(crc32c(&covered).to_be_bytes());
    batch.extend(covered);
    batch
}

fn produce_request(topic: &str, partition: i32, batch: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(PRODUCE.to_be_bytes());
    body.extend(PRODUCE_VERSION.to_be_bytes());
    body.extend(1i32.to_be_bytes()); // correlation id
    string(&mut body, "pythia-tests-markers");
    body.extend((-1i16).to_be_bytes()); // no transactional id
    body.extend((-1i16).to_be_bytes()); // acks: all
    body.extend(10_000i32.to_be_bytes()); // timeout ms
    body.extend(1i32.to_be_bytes()); // one topic
    string(&mut body, topic);
    body.extend(1i32.to_be_bytes()); // one partition
    body.extend(partition.to_be_bytes());
    body.extend((batch.len() as i32).to_be_bytes());
    body.extend(batch);
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend(body);
    request
}

/// The error code and base offset of a one-partition Produce v3 response.
fn parse_produce_response(response: &[u8]) -> (i16, i64) {
    let mut at = 4; // correlation id
    let i32_at = |at: usize| i32::from_be_bytes(response[at..at + 4].try_into().unwrap());
    assert_eq!(i32_at(at), 1, "one topic in the response");
    at += 4;
    let name_len = i16::from_be_bytes(response[at..at + 2].try_into().unwrap()) as usize;
    at += 2 + name_len;
    assert_eq!(i32_at(at), 1, "one partition in the response");
    at += 4 + 4; // count, partition index
    let error = i16::from_be_bytes(response[at..at + 2].try_into().unwrap());
    let offset = i64::from_be_bytes(response[at + 2..at + 10].try_into().unwrap());
    (error, offset)
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as i16).to_be_bytes());
    out.extend(s.as_bytes());
}

/// A zigzag varint, as record fields are written.
fn varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// CRC-32C (Castagnoli), as record batches carry it.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_its_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn varints_are_zigzag() {
        let encode = |v| {
            let mut out = Vec::new();
            varint(&mut out, v);
            out
        };
        assert_eq!(encode(0), [0]);
        assert_eq!(encode(-1), [1]);
        assert_eq!(encode(4), [8]);
        assert_eq!(encode(150), [0xAC, 0x02]);
    }

    #[test]
    fn the_batch_length_counts_from_the_leader_epoch() {
        let batch = commit_marker_batch(1, 0, 0);
        let length = i32::from_be_bytes(batch[8..12].try_into().unwrap()) as usize;
        assert_eq!(length, batch.len() - 12);
        assert_eq!(batch[16], 2, "magic");
        let attributes = i16::from_be_bytes(batch[21..23].try_into().unwrap());
        assert_eq!(attributes, CONTROL_TRANSACTIONAL);
    }
}
