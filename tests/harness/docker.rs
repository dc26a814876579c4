//! Whether a Docker engine answers, asked the way testcontainers will look for
//! one, so that a container test can skip with one clear line instead of
//! failing deep inside testcontainers.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket testcontainers (and the docker client) fall back to.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where a Docker engine is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DockerEndpoint {
    /// A unix socket (`unix:///var/run/docker.sock`).
    Unix(PathBuf),
    /// An address (`tcp://`, `http://` or `https://` in `DOCKER_HOST`).
    Tcp {
        /// The scheme as written, for messages.
        scheme: String,
        /// `host:port`.
        address: String,
    },
}

impl DockerEndpoint {
    /// Where testcontainers looks, in its order (without the
    /// `~/.testcontainers.properties` file, a feature this crate leaves off):
    /// `DOCKER_HOST`; else the first of these sockets that exists:
    /// `/var/run/docker.sock`, `$XDG_RUNTIME_DIR/.docker/run/docker.sock`,
    /// `$HOME/.docker/run/docker.sock`, `$HOME/.docker/desktop/docker.sock`;
    /// else `/var/run/docker.sock` anyway.
    pub(crate) fn from_env() -> Result<Self, String> {
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let candidates = socket_candidates(
            std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        );
        Self::resolve(docker_host.as_deref(), &candidates, |p| p.exists())
    }

    /// [`DockerEndpoint::from_env`] without the environment: `docker_host` is
    /// the value of `DOCKER_HOST`, `exists` says which `sockets` exist.
    pub(crate) fn resolve(
        docker_host: Option<&str>,
        sockets: &[PathBuf],
        exists: impl Fn(&Path) -> bool,
    ) -> Result<Self, String> {
        if let Some(host) = docker_host.filter(|h| !h.is_empty()) {
            return Self::parse(host);
        }
        let socket = sockets
            .iter()
            .find(|s| exists(s))
            .cloned()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        Ok(Self::Unix(socket))
    }

    /// Reads a `DOCKER_HOST` value: `unix://<path>`, or `tcp://`, `http://` or
    /// `https://` with `host[:port]` (2375, or 2376 for https, when left out).
    pub(crate) fn parse(docker_host: &str) -> Result<Self, String> {
        let unsupported = || {
            format!(
                "DOCKER_HOST={docker_host} is not a unix://, tcp://, http:// or https:// address"
            )
        };
        let (scheme, rest) = docker_host.split_once("://").ok_or_else(unsupported)?;
        match scheme {
            "unix" if rest.starts_with('/') => Ok(Self::Unix(PathBuf::from(rest))),
            "tcp" | "http" | "https" => {
                let authority = rest.split('/').next().unwrap_or_default();
                if authority.is_empty() {
                    return Err(unsupported());
                }
                let has_port = authority
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
                let address = if has_port {
                    authority.to_owned()
                } else {
                    let port = if scheme == "https" { 2376 } else { 2375 };
                    format!("{authority}:{port}")
                };
                Ok(Self::Tcp {
                    scheme: scheme.to_owned(),
                    address,
                })
            }
            _ => Err(unsupported()),
        }
    }

    /// Sends `GET /_ping` and waits up to `timeout` for the first line of an
    /// answer. Any HTTP answer counts: a TLS-only engine answers a plain
    /// request with 400, and is there all the same.
    pub(crate) fn ping(&self, timeout: Duration) -> Result<(), String> {
        let head = match self {
            Self::Unix(path) => {
                let stream = UnixStream::connect(path).map_err(|e| e.to_string())?;
                stream
                    .set_read_timeout(Some(timeout))
                    .and_then(|()| stream.set_write_timeout(Some(timeout)))
                    .map_err(|e| e.to_string())?;
                exchange(stream)
            }
            Self::Tcp { address, .. } => {
                let addr = address
                    .to_socket_addrs()
                    .map_err(|e| e.to_string())?
                    .next()
                    .ok_or_else(|| format!("{address} resolves to no address"))?;
                let stream =
                    TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
                stream
                    .set_read_timeout(Some(timeout))
                    .and_then(|()| stream.set_write_timeout(Some(timeout)))
                    .map_err(|e| e.to_string())?;
                exchange(stream)
            }
        }
        .map_err(|e| e.to_string())?;
        http_answered(&head)
    }
}

impl fmt::Display for DockerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp { scheme, address } => write!(f, "{scheme}://{address}"),
        }
    }
}

/// The sockets testcontainers tries, in order, when `DOCKER_HOST` is unset.
fn socket_candidates(xdg_runtime_dir: Option<PathBuf>, home: Option<PathBuf>) -> Vec<PathBuf> {
    let mut sockets = vec![PathBuf::from(DEFAULT_SOCKET)];
    sockets.extend(xdg_runtime_dir.map(|d| d.join(".docker/run/docker.sock")));
    if let Some(home) = home {
        sockets.push(home.join(".docker/run/docker.sock"));
        sockets.push(home.join(".docker/desktop/docker.sock"));
    }
    sockets
}

/// Writes the ping and reads what comes back, up to the first line.
fn exchange(mut stream: impl Read + Write) -> std::io::Result<String> {
    stream.write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Whether `head`, the start of what came back, is an HTTP answer.
fn http_answered(head: &str) -> Result<(), String> {
    let status_line = head.lines().next().unwrap_or_default().trim();
    if status_line.starts_with("HTTP/") {
        Ok(())
    } else if status_line.is_empty() {
        Err("connected, but nothing answered".to_owned())
    } else {
        Err(format!("not an HTTP answer: {status_line:?}"))
    }
}

/// Why a `TEST_BROKER=kafka` test cannot run: the second half of its skip line.
pub(crate) fn no_engine_reason(endpoint: &str, error: &str) -> String {
    format!(
        "TEST_BROKER=kafka needs a Docker engine; none answers at {endpoint} ({error}). \
         Start Docker or unset TEST_BROKER."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &str) -> DockerEndpoint {
        DockerEndpoint::Unix(PathBuf::from(path))
    }

    fn tcp(scheme: &str, address: &str) -> DockerEndpoint {
        DockerEndpoint::Tcp {
            scheme: scheme.to_owned(),
            address: address.to_owned(),
        }
    }

    #[test]
    fn docker_host_values_parse_to_endpoints() {
        let cases = [
            (
                "unix:///var/run/docker.sock",
                Ok(unix("/var/run/docker.sock")),
            ),
            (
                "unix:///run/user/1000/docker.sock",
                Ok(unix("/run/user/1000/docker.sock")),
            ),
            ("tcp://127.0.0.1:2375", Ok(tcp("tcp", "127.0.0.1:2375"))),
            ("tcp://docker", Ok(tcp("tcp", "docker:2375"))),
            ("http://docker:8080/", Ok(tcp("http", "docker:8080"))),
            ("https://docker", Ok(tcp("https", "docker:2376"))),
            ("tcp://[::1]:2375", Ok(tcp("tcp", "[::1]:2375"))),
        ];
        for (value, expected) in cases {
            assert_eq!(DockerEndpoint::parse(value), expected, "{value}");
        }
        for bad in [
            "ssh://me@host",
            "npipe:////./pipe/docker_engine",
            "/var/run/docker.sock",
            "tcp://",
            "unix://relative",
        ] {
            let error = DockerEndpoint::parse(bad).unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
    }

    #[test]
    fn docker_host_wins_then_the_first_existing_socket_then_the_default() {
        let sockets = socket_candidates(
            Some(PathBuf::from("/run/user/1000")),
            Some(PathBuf::from("/home/me")),
        );
        assert_eq!(
            sockets,
            [
                "/var/run/docker.sock",
                "/run/user/1000/.docker/run/docker.sock",
                "/home/me/.docker/run/docker.sock",
                "/home/me/.docker/desktop/docker.sock",
            ]
            .map(PathBuf::from)
        );
        let home_socket = "/home/me/.docker/run/docker.sock";
        let desktop_socket = "/home/me/.docker/desktop/docker.sock";
        let all = ["/var/run/docker.sock", home_socket, desktop_socket];
        // (DOCKER_HOST, the sockets that exist, where the engine is looked for)
        let cases = [
            (
                Some("tcp://10.0.0.1:2375"),
                &all[..],
                tcp("tcp", "10.0.0.1:2375"),
            ),
            (Some(""), &[home_socket][..], unix(home_socket)),
            (None, &all[..], unix("/var/run/docker.sock")),
            (None, &[desktop_socket][..], unix(desktop_socket)),
            (None, &[][..], unix("/var/run/docker.sock")),
        ];
        for (docker_host, existing, expected) in cases {
            let exists = |p: &Path| existing.iter().any(|e| p == Path::new(e));
            assert_eq!(
                DockerEndpoint::resolve(docker_host, &sockets, exists),
                Ok(expected),
                "DOCKER_HOST={docker_host:?}, sockets {existing:?}"
            );
        }
    }

    #[test]
    fn endpoints_print_as_docker_host_values() {
        assert_eq!(
            unix("/var/run/docker.sock").to_string(),
            "unix:///var/run/docker.sock"
        );
        assert_eq!(tcp("tcp", "docker:2375").to_string(), "tcp://docker:2375");
    }

    #[test]
    fn any_http_status_line_is_an_answer() {
        assert_eq!(
            http_answered("HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\n"),
            Ok(())
        );
        assert_eq!(http_answered("HTTP/1.0 400 Bad Request\r\n"), Ok(()));
        assert_eq!(
            http_answered(""),
            Err("connected, but nothing answered".to_owned())
        );
        assert!(http_answered("\u{15}\u{3}\u{1}").is_err());
    }

    #[test]
    fn a_missing_socket_does_not_answer() {
        let endpoint = unix("/nonexistent/pythia-tests/docker.sock");
        let error = endpoint.ping(Duration::from_millis(200)).unwrap_err();
        assert!(error.contains("No such file"), "{error}");
    }

    #[test]
    fn a_listener_that_speaks_http_answers_and_one_that_hangs_up_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = tcp("tcp", &listener.local_addr().expect("addr").to_string());
        let server = std::thread::spawn(move || {
            for answer in [&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"[..], b""] {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut request = [0u8; 128];
                let _ = stream.read(&mut request);
                stream.write_all(answer).expect("answer");
            }
        });
        assert_eq!(endpoint.ping(Duration::from_secs(5)), Ok(()));
        assert_eq!(
            endpoint.ping(Duration::from_secs(5)),
            Err("connected, but nothing answered".to_owned())
        );
        server.join().expect("server");
    }

    #[test]
    fn the_reason_names_the_endpoint_the_error_and_the_way_out() {
        assert_eq!(
            no_engine_reason(
                "unix:///var/run/docker.sock",
                "No such file or directory (os error 2)"
            ),
            "TEST_BROKER=kafka needs a Docker engine; none answers at \
             unix:///var/run/docker.sock (No such file or directory (os error 2)). \
             Start Docker or unset TEST_BROKER."
        );
    }
}
