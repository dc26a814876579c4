//! The endpoint as clients see it over TCP: routes, merged routes, gzip,
//! many concurrent scrapes, slow, idle and surplus clients, and the stop.

use std::io::Read as _;
use std::net::SocketAddr;
use std::time::Duration;

use pythia_core::connector::{Endpoint, Health, Limits, Server};
use pythia_core::metrics::{Metrics, PartitionLag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status code, lower-cased head, body (de-chunked).
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

async fn request(address: SocketAddr, head: &str) -> Response {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    parse(&raw)
}

async fn get(address: SocketAddr, path: &str) -> Response {
    request(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

fn parse(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let status = head[9..12].parse().expect("status code");
    let mut body = raw[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Response { status, head, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = data.windows(2).position(|w| w == b"\r\n").expect("size");
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line]).unwrap().trim(), 16)
            .expect("hex size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line + 2..line + 2 + size]);
        data = &data[line + 2 + size + 2..];
    }
}

fn metrics() -> Metrics {
    let metrics = Metrics::new();
    for partition in 0..20 {
        metrics.set_partition_lag(
            "billing",
            &PartitionLag::new("orders", partition, 0, 100, Some(40)),
        );
    }
    metrics
}

fn serve(limits: Limits) -> (Server, Health) {
    let health = Health::new();
    let mine = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    let server = Endpoint::new(metrics())
        .health(health.clone())
        .merge(mine)
        .limits(limits)
        .bind("127.0.0.1:0".parse().unwrap(), "test")
        .expect("bind")
        .spawn();
    (server, health)
}

#[tokio::test]
async fn serves_metrics_health_merged_routes_and_404() {
    let (server, _health) = serve(Limits::default());
    let address = server.local_addr();
    let metrics = get(address, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.head.contains("text/plain; version=0.0.4"),
        "{}",
        metrics.head
    );
    assert!(String::from_utf8_lossy(&metrics.body).contains("pythia_consumer_lag{"));
    assert_eq!(get(address, "/health/live").await.status, 200);
    let ready = get(address, "/health/ready").await;
    assert_eq!(ready.status, 503);
    assert!(String::from_utf8_lossy(&ready.body).contains("join"));
    assert_eq!(get(address, "/hello?x=1").await.body, b"hello");
    assert_eq!(get(address, "/nope").await.status, 404);
    let post = request(
        address,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(post.status, 405);
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_are_gzipped_when_asked() {
    let (server, _health) = serve(Limits::default());
    let address = server.local_addr();
    let plain = get(address, "/metrics").await;
    assert!(!plain.head.contains("content-encoding"), "{}", plain.head);
    // Plain answers carry their length: simple clients read them whole.
    assert!(plain.head.contains("content-length:"), "{}", plain.head);
    let zipped = request(
        address,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(zipped.status, 200);
    assert!(
        zipped.head.contains("content-encoding: gzip"),
        "{}",
        zipped.head
    );
    assert!(zipped.body.len() < plain.body.len());
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped.body[..])
        .read_to_end(&mut unzipped)
        .expect("valid gzip");
    assert_eq!(unzipped, plain.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_scrapes_are_all_answered() {
    let (server, _health) = serve(Limits::default());
    let address = server.local_addr();
    let scrapes: Vec<_> = (0..200)
        .map(|_| tokio::spawn(async move { get(address, "/metrics").await }))
        .collect();
    for scrape in scrapes {
        let response = scrape.await.expect("scrape task");
        assert_eq!(response.status, 200);
        assert!(String::from_utf8_lossy(&response.body).contains("pythia_consumer_lag{"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_surplus_clients_do_not_starve_probes() {
    let mut limits = Limits::default();
    limits.max_connections = 8;
    limits.header_timeout = Duration::from_secs(1);
    let (server, _health) = serve(limits);
    let address = server.local_addr();
    // Twice the limit of clients that connect and never send a request.
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(TcpStream::connect(address).await.expect("connect"));
    }
    // And one that trickles a request head, a byte every 200 ms.
    let slow = tokio::spawn(async move {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: yyyyyyyyyyyyyyyyyyyy" {
            if stream.write_all(&[*byte]).await.is_err() {
                return true; // closed by the server
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200")
    });
    // Probes still get answers: the idle ones give their places up.
    for _ in 0..3 {
        let probe = tokio::time::timeout(Duration::from_secs(20), get(address, "/health/live"))
            .await
            .expect("a probe is answered while idle clients hold connections");
        assert_eq!(probe.status, 200);
    }
    assert!(
        slow.await.expect("slow client"),
        "a trickled request head is cut off, not served"
    );
    // The server closed the idle connections it had accepted.
    let mut closed = 0;
    for mut stream in idle {
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 16, "every idle connection is closed in time");
    assert_eq!(get(address, "/health/live").await.status, 200);
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let (server, _health) = serve(Limits::default());
    let address = server.local_addr();
    assert_eq!(get(address, "/health/live").await.status, 200);
    server.shutdown().await;
    assert!(TcpStream::connect(address).await.is_err());
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let error = Endpoint::new(Metrics::new())
        .bind(address, "metrics.address")
        .unwrap_err()
        .to_string();
    assert!(error.contains("metrics.address"), "{error}");
    assert!(error.contains(&address.to_string()), "{error}");
    assert!(error.contains("free port"), "{error}");
}
