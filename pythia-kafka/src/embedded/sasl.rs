//! A SASL/PLAIN gate in front of the embedded broker.
//!
//! librdkafka's mock cluster has no SASL. The gate listens on a loopback port
//! of its own and, per connection, answers the SASL steps itself: it forwards
//! `ApiVersions` to the broker and adds `SaslHandshake` and `SaslAuthenticate`
//! to the answer, accepts the `PLAIN` mechanism only, and checks the username
//! and password. Once a client is authenticated its bytes pass through both
//! ways untouched; a client that sends anything else first, asks for another
//! mechanism or gives wrong credentials is answered with the Kafka error and
//! disconnected, as a real broker does.
//!
//! The broker advertises the gate's port in metadata, so the connections a
//! client opens after bootstrap (group coordinator, partition leaders) go
//! through the gate too.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
/// Versions the gate answers: handshake v1 (v0 sends raw SASL tokens, which
/// no current client uses) and authenticate v0–v1 (v2 is flexible).
const HANDSHAKE_VERSIONS: (i16, i16) = (1, 1);
const AUTHENTICATE_VERSIONS: (i16, i16) = (0, 1);
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// Requests before authentication are small; a larger frame is not a client
/// speaking Kafka.
const MAX_UNAUTHENTICATED_FRAME: usize = 1 << 20;

/// The one user the gate lets in.
#[derive(Clone)]
pub(super) struct Credentials {
    pub(super) username: String,
    pub(super) password: String,
}

/// The gate's listener and its accept thread; dropping it stops accepting
/// (connections already through keep going until either side closes).
pub(super) struct SaslGate {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl SaslGate {
    /// Listens on a free loopback port and passes authenticated clients on
    /// to `upstream`.
    pub(super) fn start(upstream: SocketAddr, credentials: Credentials) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let accept = std::thread::Builder::new()
            .name("pythia-sasl-gate".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stopped.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let credentials = credentials.clone();
                    let _ = std::thread::Builder::new()
                        .name("pythia-sasl-conn".into())
                        .spawn(move || {
                            if let Err(e) = serve(client, upstream, &credentials) {
                                tracing::debug!(error = %e, "SASL gate connection ended");
                            }
                        });
                }
            })?;
        Ok(Self {
            address,
            stop,
            accept: Some(accept),
        })
    }

    /// Where clients connect.
    pub(super) fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for SaslGate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// One client connection: the SASL steps, then a plain pipe.
fn serve(mut client: TcpStream, upstream: SocketAddr, credentials: &Credentials) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut broker = TcpStream::connect(upstream)?;
    broker.set_nodelay(true)?;
    loop {
        let request = read_frame(&mut client, MAX_UNAUTHENTICATED_FRAME)?;
        let header = RequestHeader::parse(&request)?;
        match header.api_key {
            API_VERSIONS => {
                write_frame(&mut broker, &request)?;
                let response = read_frame(&mut broker, usize::MAX)?;
                let response =
                    with_sasl_versions(&response, header.api_version).unwrap_or(response);
                write_frame(&mut client, &response)?;
            }
            SASL_HANDSHAKE => {
                let mechanism = read_string(&request, header.body)?;
                let error = if mechanism == "PLAIN" {
                    0
                } else {
                    UNSUPPORTED_SASL_MECHANISM
                };
                write_frame(&mut client, &handshake_response(header.correlation, error))?;
                if error != 0 {
                    return Err(refused(format!("mechanism {mechanism:?} asked for")));
                }
            }
            SASL_AUTHENTICATE if header.api_version <= AUTHENTICATE_VERSIONS.1 => {
                let token = read_bytes(&request, header.body)?;
                let accepted = plain_accepts(token, credentials);
                let error =
                    (!accepted).then_some("Authentication failed: invalid username or password");
                write_frame(
                    &mut client,
                    &authenticate_response(header.correlation, header.api_version, error),
                )?;
                if !accepted {
                    return Err(refused("wrong credentials".into()));
                }
                return pipe(client, broker);
            }
            other => {
                return Err(refused(format!(
                    "request {other} v{} before authentication",
                    header.api_version
                )));
            }
        }
    }
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

/// Copies bytes both ways until either side closes.
fn pipe(client: TcpStream, broker: TcpStream) -> io::Result<()> {
    let (mut client_in, mut broker_out) = (client.try_clone()?, broker.try_clone()?);
    let back = std::thread::Builder::new()
        .name("pythia-sasl-pipe".into())
        .spawn(move || {
            let mut broker_in = broker;
            let mut client_out = client;
            let _ = io::copy(&mut broker_in, &mut client_out);
            let _ = client_out.shutdown(Shutdown::Both);
            let _ = broker_in.shutdown(Shutdown::Both);
        })?;
    let _ = io::copy(&mut client_in, &mut broker_out);
    let _ = broker_out.shutdown(Shutdown::Both);
    let _ = client_in.shutdown(Shutdown::Both);
    let _ = back.join();
    Ok(())
}

/// The first fields of a request header (v1: the SASL requests the gate
/// answers are not flexible).
#[derive(Debug, PartialEq, Eq)]
struct RequestHeader {
    api_key: i16,
    api_version: i16,
    correlation: i32,
    /// Where the body starts (after the client id).
    body: usize,
}

impl RequestHeader {
    fn parse(frame: &[u8]) -> io::Result<Self> {
        let api_key = i16::from_be_bytes(slice(frame, 0)?);
        let api_version = i16::from_be_bytes(slice(frame, 2)?);
        let correlation = i32::from_be_bytes(slice(frame, 4)?);
        let client_id = i16::from_be_bytes(slice(frame, 8)?);
        Ok(Self {
            api_key,
            api_version,
            correlation,
            body: 10 + usize::try_from(client_id.max(0)).unwrap_or(0),
        })
    }
}

fn slice<const N: usize>(bytes: &[u8], at: usize) -> io::Result<[u8; N]> {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("frame too short"))
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A `STRING` (i16 length) at `at`.
fn read_string(frame: &[u8], at: usize) -> io::Result<String> {
    let len = usize::try_from(i16::from_be_bytes(slice(frame, at)?))
        .map_err(|_| malformed("negative string length"))?;
    let bytes = frame
        .get(at + 2..at + 2 + len)
        .ok_or_else(|| malformed("string past the frame"))?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// A `BYTES` (i32 length) at `at`.
fn read_bytes(frame: &[u8], at: usize) -> io::Result<&[u8]> {
    let len = usize::try_from(i32::from_be_bytes(slice(frame, at)?))
        .map_err(|_| malformed("negative bytes length"))?;
    frame
        .get(at + 4..at + 4 + len)
        .ok_or_else(|| malformed("bytes past the frame"))
}

fn read_frame(stream: &mut TcpStream, max: usize) -> io::Result<Vec<u8>> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = usize::try_from(i32::from_be_bytes(size)).map_err(|_| malformed("negative size"))?;
    if size > max {
        return Err(malformed("frame larger than a SASL step"));
    }
    let mut frame = vec![0u8; size];
    stream.read_exact(&mut frame)?;
    Ok(frame)
}

fn write_frame(stream: &mut TcpStream, frame: &[u8]) -> io::Result<()> {
    let size = i32::try_from(frame.len()).map_err(|_| malformed("frame too large"))?;
    stream.write_all(&size.to_be_bytes())?;
    stream.write_all(frame)
}

/// `[authzid] NUL authcid NUL password` (RFC 4616) against the one user.
fn plain_accepts(token: &[u8], credentials: &Credentials) -> bool {
    let mut parts = token.split(|&b| b == 0);
    let (Some(_authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    // Both compared in full whatever the first gives: no early exit on the
    // username that would tell a prober which part was wrong.
    let user_ok = constant_time_eq(username, credentials.username.as_bytes());
    let password_ok = constant_time_eq(password, credentials.password.as_bytes());
    user_ok & password_ok
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn handshake_response(correlation: i32, error: i16) -> Vec<u8> {
    let mut out = correlation.to_be_bytes().to_vec();
    out.extend(error.to_be_bytes());
    out.extend(1i32.to_be_bytes());
    out.extend(5i16.to_be_bytes());
    out.extend(b"PLAIN");
    out
}

fn authenticate_response(correlation: i32, version: i16, error: Option<&str>) -> Vec<u8> {
    let mut out = correlation.to_be_bytes().to_vec();
    match error {
        None => {
            out.extend(0i16.to_be_bytes());
            out.extend((-1i16).to_be_bytes());
        }
        Some(message) => {
            out.extend(SASL_AUTHENTICATION_FAILED.to_be_bytes());
            out.extend((message.len() as i16).to_be_bytes());
            out.extend(message.as_bytes());
        }
    }
    // No auth bytes back: PLAIN has one round.
    out.extend(0i32.to_be_bytes());
    if version >= 1 {
        // session_lifetime_ms: 0, no re-authentication asked for.
        out.extend(0i64.to_be_bytes());
    }
    out
}

/// The broker's `ApiVersions` response (correlation id first) with the
/// gate's SASL versions in place of any the broker listed. `None` when the
/// response is an error or does not parse; it is then passed on as it is.
fn with_sasl_versions(response: &[u8], version: i16) -> Option<Vec<u8>> {
    let flexible = version >= 3;
    let error = i16::from_be_bytes(slice(response, 4).ok()?);
    if error != 0 {
        return None;
    }
    let mut at = 6;
    let count = if flexible {
        let (n, used) = read_uvarint(response, at)?;
        at += used;
        usize::try_from(n.checked_sub(1)?).ok()?
    } else {
        let n = i32::from_be_bytes(slice(response, at).ok()?);
        at += 4;
        usize::try_from(n).ok()?
    };
    let mut kept: Vec<&[u8]> = Vec::with_capacity(count + 2);
    for _ in 0..count {
        let start = at;
        let key = i16::from_be_bytes(slice(response, at).ok()?);
        at += 6;
        if flexible {
            at = skip_tagged_fields(response, at)?;
        }
        if key != SASL_HANDSHAKE && key != SASL_AUTHENTICATE {
            kept.push(response.get(start..at)?);
        }
    }
    let rest = response.get(at..)?;

    let mut out = response[..6].to_vec();
    let total = kept.len() + 2;
    if flexible {
        write_uvarint(&mut out, total as u64 + 1);
    } else {
        out.extend(i32::try_from(total).ok()?.to_be_bytes());
    }
    for entry in kept {
        out.extend(entry);
    }
    for (key, (min, max)) in [
        (SASL_HANDSHAKE, HANDSHAKE_VERSIONS),
        (SASL_AUTHENTICATE, AUTHENTICATE_VERSIONS),
    ] {
        out.extend(key.to_be_bytes());
        out.extend(min.to_be_bytes());
        out.extend(max.to_be_bytes());
        if flexible {
            out.push(0); // no tagged fields
        }
    }
    out.extend(rest);
    Some(out)
}

fn read_uvarint(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.get(at..)?.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn write_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Past a tagged-field section (count, then tag, size, bytes for each).
fn skip_tagged_fields(bytes: &[u8], mut at: usize) -> Option<usize> {
    let (count, used) = read_uvarint(bytes, at)?;
    at += used;
    for _ in 0..count {
        let (_tag, used) = read_uvarint(bytes, at)?;
        at += used;
        let (size, used) = read_uvarint(bytes, at)?;
        at += used + usize::try_from(size).ok()?;
    }
    (at <= bytes.len()).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Credentials {
        Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        }
    }

    /// An ApiVersions v3 response: correlation 7, no error, `keys` with
    /// versions 0..=1, throttle 0 and one tagged field at the end.
    fn flexible_response(keys: &[i16]) -> Vec<u8> {
        let mut out = 7i32.to_be_bytes().to_vec();
        out.extend(0i16.to_be_bytes());
        write_uvarint(&mut out, keys.len() as u64 + 1);
        for key in keys {
            out.extend(key.to_be_bytes());
            out.extend(0i16.to_be_bytes());
            out.extend(1i16.to_be_bytes());
            out.push(0);
        }
        out.extend(0i32.to_be_bytes());
        out.extend([1, 0, 2, 0xAB, 0xCD]); // one tag (0) of two bytes
        out
    }

    /// The (key, min, max) entries of a flexible response and what follows.
    fn flexible_entries(response: &[u8]) -> (Vec<(i16, i16, i16)>, Vec<u8>) {
        let (n, used) = read_uvarint(response, 6).unwrap();
        let mut at = 6 + used;
        let mut entries = Vec::new();
        for _ in 0..n - 1 {
            let field = |o: usize| i16::from_be_bytes(slice(response, at + o).unwrap());
            entries.push((field(0), field(2), field(4)));
            at = skip_tagged_fields(response, at + 6).unwrap();
        }
        (entries, response[at..].to_vec())
    }

    #[test]
    fn flexible_api_versions_gain_the_sasl_requests() {
        let response = flexible_response(&[0, 1, SASL_HANDSHAKE, 3]);
        let patched = with_sasl_versions(&response, 3).unwrap();
        let (entries, rest) = flexible_entries(&patched);
        assert_eq!(
            entries,
            vec![(0, 0, 1), (1, 0, 1), (3, 0, 1), (17, 1, 1), (36, 0, 1)]
        );
        assert_eq!(
            rest,
            [0, 0, 0, 0, 1, 0, 2, 0xAB, 0xCD],
            "throttle and tags kept"
        );
        assert_eq!(patched[..6], response[..6], "correlation and error kept");
    }

    #[test]
    fn classic_api_versions_gain_the_sasl_requests() {
        let mut response = 9i32.to_be_bytes().to_vec();
        response.extend(0i16.to_be_bytes());
        response.extend(1i32.to_be_bytes());
        response.extend([0, 3, 0, 0, 0, 9]); // Metadata 0..=9
        response.extend(0i32.to_be_bytes()); // throttle (v1+)
        let patched = with_sasl_versions(&response, 1).unwrap();
        assert_eq!(i32::from_be_bytes(slice(&patched, 6).unwrap()), 3);
        assert_eq!(&patched[10..16], &[0, 3, 0, 0, 0, 9]);
        assert_eq!(&patched[16..22], &[0, 17, 0, 1, 0, 1]);
        assert_eq!(&patched[22..28], &[0, 36, 0, 0, 0, 1]);
        assert_eq!(&patched[28..], &[0, 0, 0, 0]);
    }

    #[test]
    fn an_error_response_is_passed_on_as_it_is() {
        let mut response = 7i32.to_be_bytes().to_vec();
        response.extend(35i16.to_be_bytes()); // UNSUPPORTED_VERSION
        response.extend(0i32.to_be_bytes());
        assert_eq!(with_sasl_versions(&response, 4), None);
        assert_eq!(
            with_sasl_versions(&[0, 0, 0, 7, 0, 0, 0x80], 3),
            None,
            "truncated"
        );
    }

    #[test]
    fn plain_checks_both_the_user_and_the_password() {
        assert!(plain_accepts(b"\0alice\0s3cret", &alice()));
        assert!(plain_accepts(b"admin\0alice\0s3cret", &alice()));
        assert!(!plain_accepts(b"\0alice\0wrong", &alice()));
        assert!(!plain_accepts(b"\0bob\0s3cret", &alice()));
        assert!(
            !plain_accepts(b"alice\0s3cret", &alice()),
            "no authzid part"
        );
        assert!(!plain_accepts(b"\0alice\0s3cret\0", &alice()), "extra part");
        assert!(!plain_accepts(b"", &alice()));
    }

    #[test]
    fn request_headers_and_bodies_parse() {
        let mut frame = Vec::new();
        frame.extend(SASL_HANDSHAKE.to_be_bytes());
        frame.extend(1i16.to_be_bytes());
        frame.extend(42i32.to_be_bytes());
        frame.extend(3i16.to_be_bytes());
        frame.extend(b"cli");
        frame.extend(5i16.to_be_bytes());
        frame.extend(b"PLAIN");
        let header = RequestHeader::parse(&frame).unwrap();
        assert_eq!(
            header,
            RequestHeader {
                api_key: 17,
                api_version: 1,
                correlation: 42,
                body: 13
            }
        );
        assert_eq!(read_string(&frame, header.body).unwrap(), "PLAIN");
        assert!(read_string(&frame[..15], header.body).is_err(), "cut short");
        assert!(RequestHeader::parse(&frame[..5]).is_err());
    }

    #[test]
    fn responses_encode_the_kafka_fields() {
        assert_eq!(
            handshake_response(5, UNSUPPORTED_SASL_MECHANISM),
            [
                0, 0, 0, 5, 0, 33, 0, 0, 0, 1, 0, 5, b'P', b'L', b'A', b'I', b'N'
            ]
        );
        assert_eq!(
            authenticate_response(5, 0, None),
            [0, 0, 0, 5, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
        );
        let failed = authenticate_response(5, 1, Some("no"));
        assert_eq!(&failed[4..10], &[0, 58, 0, 2, b'n', b'o']);
        assert_eq!(
            failed.len(),
            4 + 2 + 4 + 4 + 8,
            "v1 adds the session lifetime"
        );
    }

    #[test]
    fn uvarints_round_trip() {
        for value in [0u64, 1, 127, 128, 300, 16_384, u64::from(u32::MAX)] {
            let mut out = Vec::new();
            write_uvarint(&mut out, value);
            assert_eq!(read_uvarint(&out, 0), Some((value, out.len())));
        }
    }
}
