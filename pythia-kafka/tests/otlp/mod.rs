//! A collector for the trace export tests: an OTLP/HTTP receiver on loopback
//! that keeps every request, and a decoder of the spans in a request body.
//!
//! The decoder reads the protobuf wire format itself, for the few fields the
//! tests look at, so that a default build of the tests compiles no
//! OpenTelemetry crate.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One request the collector got.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// Method and path, e.g. `POST /v1/traces`.
    pub(crate) target: String,
    pub(crate) content_type: String,
    pub(crate) body: Vec<u8>,
}

/// An OTLP/HTTP receiver: answers every request `200 OK` with an empty
/// `ExportTraceServiceResponse`, and keeps the requests.
pub(crate) struct Collector {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Collector {
    /// Listens on a free loopback port until the test process ends.
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || answer(stream, &kept));
            }
        });
        Self { url, requests }
    }

    /// The base URL to export to.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The requests so far.
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Answers the requests of one connection (the client keeps it alive).
fn answer(stream: TcpStream, requests: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut target = String::new();
        if reader.read_line(&mut target).unwrap_or(0) == 0 {
            return;
        }
        let target = target
            .trim_end()
            .trim_end_matches("HTTP/1.1")
            .trim_end()
            .to_owned();
        let (mut length, mut content_type, mut expect_continue) = (0, String::new(), false);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap(),
                "content-type" => content_type = value.to_owned(),
                "expect" => expect_continue = value.eq_ignore_ascii_case("100-continue"),
                "transfer-encoding" => panic!("the collector reads no chunked bodies"),
                _ => {}
            }
        }
        if expect_continue {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        requests.lock().unwrap().push(Request {
            target,
            content_type,
            body,
        });
        writer
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
            )
            .unwrap();
    }
}

/// An exported span, as far as the tests look.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    /// `service.name` of its resource.
    pub(crate) service: String,
    pub(crate) name: String,
    /// Lowercase hex, as in a `traceparent`.
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    /// Empty for a trace's root.
    pub(crate) parent_span_id: String,
    pub(crate) attributes: HashMap<String, Value>,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Other,
}

/// The spans of an `ExportTraceServiceRequest` body
/// (opentelemetry/proto/collector/trace/v1/trace_service.proto).
pub(crate) fn spans(body: &[u8]) -> Vec<Span> {
    let mut spans = Vec::new();
    // ExportTraceServiceRequest.resource_spans = 1
    for resource_spans in messages(body, 1) {
        // ResourceSpans.resource = 1, Resource.attributes = 1
        let resource = attributes(messages(resource_spans, 1).flat_map(|r| messages(r, 1)));
        let service = match resource.get("service.name") {
            Some(Value::Str(name)) => name.clone(),
            _ => String::new(),
        };
        // ResourceSpans.scope_spans = 2, ScopeSpans.spans = 2
        for span in messages(resource_spans, 2).flat_map(|s| messages(s, 2)) {
            let bytes = |number| hex(messages(span, number).next().unwrap_or_default());
            spans.push(Span {
                service: service.clone(),
                name: text(messages(span, 5).next().unwrap_or_default()),
                trace_id: bytes(1),
                span_id: bytes(2),
                parent_span_id: bytes(4),
                attributes: attributes(messages(span, 9)),
            });
        }
    }
    spans
}

/// `KeyValue { string key = 1; AnyValue value = 2; }` messages as a map.
fn attributes<'a>(key_values: impl Iterator<Item = &'a [u8]>) -> HashMap<String, Value> {
    key_values
        .map(|kv| {
            let key = text(messages(kv, 1).next().unwrap_or_default());
            // AnyValue: string_value = 1, int_value = 3
            let value = messages(kv, 2).next().unwrap_or_default();
            let value = match fields(value).first() {
                Some((1, Field::Bytes(s))) => Value::Str(text(s)),
                Some((3, Field::Varint(i))) => Value::Int(*i as i64),
                _ => Value::Other,
            };
            (key, value)
        })
        .collect()
}

/// The length-delimited fields numbered `number`.
fn messages(message: &[u8], number: u32) -> impl Iterator<Item = &[u8]> {
    fields(message)
        .into_iter()
        .filter_map(move |(n, field)| match field {
            Field::Bytes(bytes) if n == number => Some(bytes),
            _ => None,
        })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A field's value by wire type.
enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

/// The fields of a protobuf message, in order.
fn fields(mut message: &[u8]) -> Vec<(u32, Field<'_>)> {
    let mut fields = Vec::new();
    while !message.is_empty() {
        let key = varint(&mut message);
        let number = u32::try_from(key >> 3).unwrap();
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut message)),
            1 => {
                message = &message[8..];
                Field::Fixed64
            }
            2 => {
                let length = usize::try_from(varint(&mut message)).unwrap();
                let (bytes, rest) = message.split_at(length);
                message = rest;
                Field::Bytes(bytes)
            }
            5 => {
                message = &message[4..];
                Field::Fixed32
            }
            other => panic!("protobuf wire type {other} is not expected in OTLP"),
        };
        fields.push((number, field));
    }
    fields
}

fn varint(message: &mut &[u8]) -> u64 {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let (byte, rest) = message.split_first().expect("a varint runs off the end");
        *message = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("a varint is longer than 10 bytes")
}

#[test]
fn the_decoder_reads_what_it_is_given() {
    // KeyValue { key: "offset", value: AnyValue { int_value: 300 } }
    let key_value = [
        0x0a, 6, b'o', b'f', b'f', b's', b'e', b't', 0x12, 3, 0x18, 0xac, 0x02,
    ];
    let map = attributes([&key_value[..]].into_iter());
    assert_eq!(map["offset"], Value::Int(300));
}
