//! Network namespaces for network-fault tests: the broker in one namespace, the
//! workers in another, joined by a wire whose latency, loss and partitions the
//! test sets while everything runs.
//!
//! The wire is a TUN device in each namespace and a relay in the test process
//! that copies IP packets between the two, delaying or dropping them as told:
//! what `tc qdisc … netem` does on a veth pair, for kernels built without netem
//! (this CI's: `CONFIG_NET_SCH_NETEM` is not set, and `tc qdisc add … netem`
//! answers "Specified qdisc kind is unknown"). Neither namespace has a route
//! anywhere but the other end of the wire and its own loopback, so nothing a
//! test starts there can reach another address.
//!
//! Needs root, `ip` (iproute2) and `/dev/net/tun`: see [`available`]. Processes
//! start inside with [`Netns::command`], [`WorkerSpec::spawn_in`] and
//! [`Tansu::start_in`]; the embedded broker with [`EmbeddedInNetns`].

use std::collections::BinaryHeap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pythia_kafka::EmbeddedBroker;

use crate::{Tansu, Worker, WorkerSpec, worker_bin};

/// The broker's address, on its end of the wire.
pub const BROKER_ADDRESS: &str = "10.251.0.1";
/// The workers' address, on their end of the wire.
pub const WORKER_ADDRESS: &str = "10.251.0.2";
/// The wire's subnet: just the two ends.
const PREFIX_LEN: u8 = 30;
/// Where `ip netns add` puts its namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// Prefix of every namespace these tests create: `<prefix><pid>-<n>-<role>`.
const NAME_PREFIX: &str = "pythia-nf-";

/// Whether this machine can run network-namespace tests. When it cannot,
/// prints why and returns false (the test should return: a skip); on CI
/// (`CI` set and neither empty, `0` nor `false`) it fails the test instead,
/// so CI never passes by skipping.
pub fn available(test: &str) -> bool {
    let Some(reason) = missing() else {
        return true;
    };
    assert!(!on_ci(), "{test} cannot run on CI: {reason}");
    eprintln!("SKIPPED {test}: {reason} (set CI=true to make this a failure)");
    false
}

/// Whether this is CI: `CI` set, and neither empty, `0` nor `false`. There a
/// test must not skip.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Why network namespaces cannot be used here, if they cannot.
fn missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: creating network namespaces needs root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        _ => {
            return Some("`ip` (iproute2) is missing: apt-get install -y iproute2".into());
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing: the kernel has no TUN driver".into());
    }
    None
}

/// Runs `ip` with `args`, failing the test with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A named network namespace (`ip netns add`), deleted on drop. Processes
/// still inside keep it alive until they exit: drop them first.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with its loopback up.
    pub fn create(name: &str) -> Self {
        ip(&["netns", "add", name]);
        let ns = Self {
            name: name.to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A command that runs `program` inside the namespace
    /// (`ip netns exec <name> <program>`, which execs it: the child's pid is
    /// the program's). It is killed if the thread that spawns it ends.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        die_with_spawner(&mut command);
        command
    }

    /// Runs `f` on a thread that has joined the namespace: sockets it opens,
    /// and threads it starts (librdkafka's, say), are inside. Panics in `f`
    /// propagate.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                let file =
                    File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                // SAFETY: `file` is an open namespace file; setns changes only
                // this thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
                f()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Starts `thread` on a thread of its own inside the namespace, for work
    /// that outlives one call (a paced producer, say).
    pub fn spawn<T: Send + 'static>(
        &self,
        thread: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // SAFETY: as in `enter`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            thread()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("could not delete network namespace {}: {out:?}", self.name);
        }
    }
}

/// Makes the spawned process get SIGKILL when the spawning thread ends, so a
/// test that dies without unwinding leaves no process behind.
fn die_with_spawner(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no parent state.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Deletes namespaces left by test processes that died without cleaning up
/// (SIGKILL): those whose name carries the pid of a process that is gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("deleting stale network namespace {name}");
            drop(Netns { name });
        }
    }
}

/// What the wire does to packets entering it, in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Mean one-way delay.
    pub delay: Duration,
    /// Each packet's delay is uniform in `delay ± jitter` (packets may be
    /// reordered, as with netem).
    pub jitter: Duration,
    /// Probability that a packet is dropped, 0 to 1.
    pub loss: f64,
    /// Drop every packet: a network partition (a black hole, not a link
    /// down: senders see silence, not errors).
    pub partitioned: bool,
}

impl Faults {
    /// A clean wire.
    pub fn none() -> Self {
        Self::default()
    }

    /// `delay ± jitter` each way and `loss` (0 to 1) of the packets dropped.
    pub fn degraded(delay: Duration, jitter: Duration, loss: f64) -> Self {
        Self {
            delay,
            jitter,
            loss,
            partitioned: false,
        }
    }

    /// Nothing gets through.
    pub fn partition() -> Self {
        Self {
            partitioned: true,
            ..Self::default()
        }
    }
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.partitioned {
            return f.write_str("partition");
        }
        write!(
            f,
            "delay {}ms ± {}ms, loss {}%",
            self.delay.as_millis(),
            self.jitter.as_millis(),
            self.loss * 100.0
        )
    }
}

/// Packets that went through the wire, and those it dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Delivered to the other end.
    pub passed: u64,
    /// Dropped by loss or a partition.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    passed: AtomicU64,
    dropped: AtomicU64,
}

/// A point-to-point link between two namespaces, relayed by the test process
/// with the [`Faults`] it is set to. Stops (and the devices vanish) on drop.
pub struct Wire {
    faults: Arc<Mutex<Faults>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Name of the wire's device in each namespace.
const DEVICE: &str = "wire0";

impl Wire {
    /// Joins `a` (address `a_ip`) and `b` (address `b_ip`), both in one /30,
    /// with a clean wire.
    pub fn connect(a: &Netns, a_ip: &str, b: &Netns, b_ip: &str) -> Self {
        let tun_a = Arc::new(a.enter(|| open_tun(DEVICE)));
        let tun_b = Arc::new(b.enter(|| open_tun(DEVICE)));
        for (ns, address) in [(a, a_ip), (b, b_ip)] {
            let cidr = format!("{address}/{PREFIX_LEN}");
            ip(&["-n", ns.name(), "addr", "add", &cidr, "dev", DEVICE]);
            ip(&["-n", ns.name(), "link", "set", DEVICE, "up"]);
        }
        let faults = Arc::new(Mutex::new(Faults::none()));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (seed, from, to) in [(1, &tun_a, &tun_b), (2, &tun_b, &tun_a)] {
            let (tx, rx) = mpsc::channel();
            let relay = Relay {
                from: Arc::clone(from),
                faults: Arc::clone(&faults),
                counters: Arc::clone(&counters),
                stop: Arc::clone(&stop),
                rng: Rng::seeded(seed),
                sequence: 0,
            };
            threads.push(
                std::thread::Builder::new()
                    .name("wire-in".into())
                    .spawn(move || relay.run(tx))
                    .expect("spawn wire thread"),
            );
            let to = Arc::clone(to);
            let counters = Arc::clone(&counters);
            threads.push(
                std::thread::Builder::new()
                    .name("wire-out".into())
                    .spawn(move || deliver(&to, &rx, &counters))
                    .expect("spawn wire thread"),
            );
        }
        Self {
            faults,
            counters,
            stop,
            threads,
        }
    }

    /// From now on, packets entering the wire meet `faults` (packets already
    /// on the wire keep the delay they were given).
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// What went through and what was dropped so far, both directions.
    pub fn stats(&self) -> WireStats {
        WireStats {
            passed: self.counters.passed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Opens a TUN device `name` (IP packets, no extra header) in the calling
/// thread's network namespace. It exists while the file is open.
fn open_tun(name: &str) -> File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    assert!(name.len() < request.ifr_name.len(), "device name too long");
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `request` is; the
    // descriptor is open for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    assert_eq!(
        rc,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    file
}

/// Waits up to `timeout` for `file` to be readable.
fn readable(file: &File, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as libc::c_int) };
    rc > 0 && poll.revents & libc::POLLIN != 0
}

/// One packet on the wire, due at `due`; ordered by due time, then arrival.
#[derive(PartialEq, Eq)]
struct InFlight {
    due: Instant,
    sequence: u64,
    packet: Vec<u8>,
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest due comes first.
        (other.due, other.sequence).cmp(&(self.due, self.sequence))
    }
}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Reads packets entering the wire at one end and decides their fate.
struct Relay {
    from: Arc<File>,
    faults: Arc<Mutex<Faults>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    rng: Rng,
    sequence: u64,
}

impl Relay {
    fn run(mut self, out: mpsc::Sender<InFlight>) {
        let mut buffer = vec![0u8; 65536];
        while !self.stop.load(Ordering::Relaxed) {
            if !readable(&self.from, Duration::from_millis(100)) {
                continue;
            }
            let n = match (&*self.from).read(&mut buffer) {
                Ok(n) => n,
                Err(_) => continue,
            };
            let faults = *self.faults.lock().unwrap_or_else(|p| p.into_inner());
            if faults.partitioned || self.rng.unit() < faults.loss {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let spread = faults.jitter.as_secs_f64() * (2.0 * self.rng.unit() - 1.0);
            let delay = Duration::from_secs_f64((faults.delay.as_secs_f64() + spread).max(0.0));
            self.sequence += 1;
            let packet = InFlight {
                due: Instant::now() + delay,
                sequence: self.sequence,
                packet: buffer[..n].to_vec(),
            };
            if out.send(packet).is_err() {
                return;
            }
        }
    }
}

/// Writes packets out at the other end when they are due.
fn deliver(to: &File, packets: &mpsc::Receiver<InFlight>, counters: &Counters) {
    let mut waiting = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while waiting.peek().is_some_and(|p: &InFlight| p.due <= now) {
            let packet = waiting.pop().expect("peeked");
            // A packet the kernel refuses is lost, as on a real link.
            let _ = (&*to).write(&packet.packet);
            counters.passed.fetch_add(1, Ordering::Relaxed);
        }
        let wait = waiting.peek().map_or(Duration::from_millis(100), |p| {
            p.due.saturating_duration_since(now)
        });
        match packets.recv_timeout(wait) {
            Ok(packet) => waiting.push(packet),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// xorshift64*: enough randomness for packet fates, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded(stream: u64) -> Self {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self((clock ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Two namespaces, `broker` at [`BROKER_ADDRESS`] and `workers` at
/// [`WORKER_ADDRESS`], joined by a [`Wire`]. Dropping it stops the wire and
/// deletes the namespaces; drop the processes inside first (declare it
/// before them).
pub struct FaultNet {
    /// The link between the two.
    pub wire: Wire,
    /// Where the broker runs.
    pub broker: Netns,
    /// Where the workers, and the test's own clients, run.
    pub workers: Netns,
}

impl FaultNet {
    /// Creates the namespaces (unique to this process and call) and the wire.
    pub fn new() -> Self {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        static N: AtomicUsize = AtomicUsize::new(0);
        SWEEP.call_once(sweep_stale);
        let base = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let broker = Netns::create(&format!("{base}-broker"));
        let workers = Netns::create(&format!("{base}-workers"));
        let wire = Wire::connect(&broker, BROKER_ADDRESS, &workers, WORKER_ADDRESS);
        Self {
            wire,
            broker,
            workers,
        }
    }
}

impl Default for FaultNet {
    fn default() -> Self {
        Self::new()
    }
}

impl Tansu {
    /// Starts a broker inside `ns`, listening on `address:9092` (an address of
    /// the namespace), and waits until it answers from `client_ns`.
    pub fn start_in(ns: &Netns, address: &str, client_ns: &Netns) -> Self {
        let dir = crate::scratch("tansu-netns");
        let url = format!("tcp://{address}:9092");
        let log = dir.join("tansu.log");
        let out = File::create(&log).expect("tansu log");
        let err = out.try_clone().expect("tansu log");
        let child = ns
            .command(Self::bin())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn tansu");
        let mut tansu = Tansu {
            child,
            bootstrap: format!("{address}:9092"),
            log,
        };
        let started = client_ns.enter(|| tansu.wait_ready(Duration::from_secs(30)));
        assert!(started, "tansu exited; log:\n{}", tansu.log_text());
        tansu
    }
}

impl WorkerSpec<'_> {
    /// Starts the worker inside `ns`, like [`WorkerSpec::spawn`].
    pub fn spawn_in(&self, ns: &Netns, dir: &Path, name: &str) -> Worker {
        self.spawn_with(ns.command(worker_bin()), dir, name)
    }
}

/// Carries TCP connections accepted at one address to another, both inside
/// one namespace: how a broker that listens on loopback only is reached from
/// the other end of the wire. Stops, and cuts every connection, on drop.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    /// Listens on `listen` inside `ns`, connecting each accepted connection to
    /// `target` (from inside `ns` too).
    pub fn start(ns: &Netns, listen: SocketAddr, target: SocketAddr) -> Self {
        let listener = ns
            .enter(|| TcpListener::bind(listen))
            .unwrap_or_else(|e| panic!("forwarder cannot listen on {listen}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (stopped, registry) = (Arc::clone(&stop), Arc::clone(&open));
        // Not joined: it ends within 10 ms of the stop flag.
        drop(ns.spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        // This thread is inside `ns`: so is the connection.
                        if let Ok(upstream) = TcpStream::connect(target) {
                            splice(client, upstream, &registry);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
        Self { stop, open }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for stream in self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies both ways between `a` and `b` on threads of their own, passing
/// half-closes on; `registry` keeps a handle to cut them.
fn splice(a: TcpStream, b: TcpStream, registry: &Mutex<Vec<TcpStream>>) {
    let handles = (|| {
        for s in [&a, &b] {
            s.set_nonblocking(false)?;
            // Kafka clients send small requests: no Nagle delay on top of the wire's.
            s.set_nodelay(true)?;
        }
        Ok::<_, std::io::Error>((
            a.try_clone()?,
            b.try_clone()?,
            a.try_clone()?,
            b.try_clone()?,
        ))
    })();
    let Ok((a_out, b_in, a_keep, b_keep)) = handles else {
        return;
    };
    registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend([a_keep, b_keep]);
    std::thread::spawn(move || pump(a, b_in));
    std::thread::spawn(move || pump(b, a_out));
}

/// Copies `from` to `to` until `from` ends, then half-closes `to`.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// The embedded broker (librdkafka's mock cluster), hosted by the test process
/// inside a namespace and reached at `<address>:<port>` through a
/// [`Forwarder`]: the mock listens on its namespace's loopback only. Stops on
/// drop.
pub struct EmbeddedInNetns {
    // Field order is drop order: connections are cut before the broker goes.
    _forwarder: Forwarder,
    _broker: EmbeddedBroker,
    bootstrap: String,
}

impl EmbeddedInNetns {
    /// Starts the broker inside `ns` with `topics`, advertised (and forwarded)
    /// at `address`, an address of `ns`, on the port of its loopback listener.
    pub fn start(ns: &Netns, address: &str, topics: &[(&str, i32)]) -> Self {
        // librdkafka starts the mock's thread, and opens its listener, from the
        // calling thread: inside `ns`.
        let broker = ns
            .enter(|| EmbeddedBroker::with_topics(topics.iter().copied()))
            .expect("embedded broker");
        let loopback: SocketAddr = broker
            .bootstrap_servers()
            .parse()
            .expect("the embedded broker's bootstrap is IP:PORT");
        let public = SocketAddr::new(address.parse().expect("an IP address"), loopback.port());
        let forwarder = Forwarder::start(ns, public, loopback);
        broker
            .advertise(address, loopback.port())
            .expect("advertise the broker");
        Self {
            _forwarder: forwarder,
            _broker: broker,
            bootstrap: public.to_string(),
        }
    }

    /// The `bootstrap.servers` value that reaches it from the other end of the wire.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}
