//! s1: scale-out through Redis. The same fan-out, 100 clients on one path, served by one
//! instance (`rxplus`: one server, 100 clients) or by two instances on one Redis
//! (`rxplus-redis`: servers A and B, each with a `RedisBroker`, 50 clients each; A broadcasts,
//! so B's 50 get every message through Redis).
//!
//! * deliveries/s: A broadcasts N 64 B text messages; from the first send until every one of
//!   the 100 clients has all N, clients × N / that time.
//! * latency p50: then M messages, one a millisecond, each carrying its send time; the median
//!   time from `send` on A to a client's callback, for a client on A (one instance) or on B
//!   (two instances: a cross-instance delivery). The difference of the two medians is what
//!   Redis adds.
//!
//! Unlike the other workloads it runs in the orchestrator's process (the two-instance variant
//! has two servers and a Redis, and the children speak one address): both variants alike, so
//! the figures compare. The `rxplus-redis` variant starts its own `redis-server` on a free port
//! (`--save '' --appendonly no`) and fails with a clear error when it is not installed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rxplus::ws::broker::{RedisBroker, RedisConfig};
use rxplus::ws::{RxWSClient, RxWSServer, TaggedData, Text, WSConfig};
use rxplus::OverflowStrategy;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::broadcast::lock;
use super::{wait_until, Ctx, Metric, Sample, Variant, Workload, CLIENT_DEADLINE};
use crate::peers::{rx, RunningServer};

pub struct ScaleOut;
pub static S1: ScaleOut = ScaleOut;

const PATH: &str = "/fanout";
const REGISTER_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
struct Params {
    clients: usize,
    messages: usize,
    size: usize,
    latency_messages: usize,
}

static VARIANTS: [Variant; 2] = [
    Variant {
        key: "rxplus",
        label: "1 instance × 100 clients",
    },
    Variant {
        key: "rxplus-redis",
        label: "2 instances × 50 clients, Redis",
    },
];

static METRICS: [Metric; 2] = [
    Metric {
        key: "deliveries_per_s",
        label: "fan-out deliveries",
        unit: "msg/s",
        higher_is_better: true,
        baselines: &["rxplus"],
        decimals: 0,
    },
    Metric {
        key: "latency_p50_us",
        label: "delivery latency p50 (2 instances: across)",
        unit: "µs",
        higher_is_better: false,
        baselines: &["rxplus"],
        decimals: 0,
    },
];

impl Workload for ScaleOut {
    fn id(&self) -> &'static str {
        "s1"
    }

    fn title(&self, params: &Value) -> String {
        match serde_json::from_value::<Params>(params.clone()) {
            Ok(p) => format!(
                "fan-out of {} text messages of {} B to {} clients, one instance or two on Redis",
                p.messages, p.size, p.clients
            ),
            Err(_) => "scale-out".into(),
        }
    }

    fn variants(&self) -> &'static [Variant] {
        &VARIANTS
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }

    fn runs(&self, quick: bool) -> usize {
        if quick {
            3
        } else {
            5
        }
    }

    fn params(&self, quick: bool) -> Value {
        serde_json::json!(Params {
            clients: 100,
            messages: if quick { 2_000 } else { 10_000 },
            size: 64,
            latency_messages: if quick { 300 } else { 1_000 },
        })
    }

    fn run_once(&self, _ctx: &Ctx, variant: &Variant, params: &Value) -> Result<Sample> {
        let p: Params = serde_json::from_value(params.clone())?;
        let cluster = match variant.key {
            "rxplus" => Cluster::single(&p)?,
            "rxplus-redis" => Cluster::pair(&p)?,
            other => bail!("s1: unknown variant {other:?}"),
        };
        let sample = cluster.measure(&p);
        cluster.dispose();
        sample
    }

    fn server(&self, _variant: &str, _params: &Value) -> Result<Box<dyn RunningServer>> {
        bail!("s1 runs in the orchestrator's process, not in server children")
    }

    fn client(&self, _variant: &str, _addr: SocketAddr, _params: &Value) -> Result<Sample> {
        bail!("s1 runs in the orchestrator's process, not in client children")
    }
}

/// What a client counts: messages received, and the latency of each timed one.
#[derive(Default)]
struct Tally {
    count: AtomicUsize,
    latencies_us: Mutex<Vec<f64>>,
}

/// The servers (A first, the one that broadcasts), their clients, and Redis if any.
struct Cluster {
    servers: Vec<RxWSServer<String>>,
    brokers: Vec<RedisBroker>,
    /// Per client: its tally; `timed` is the client whose latencies are reported.
    clients: Vec<(RxWSClient<String>, Arc<Tally>)>,
    timed: usize,
    epoch: Instant,
    _redis: Option<Redis>,
}

fn config() -> WSConfig {
    // Block like w4: a broadcast waits for a full connection instead of dropping.
    WSConfig::default().outbound(1024, OverflowStrategy::Block)
}

impl Cluster {
    fn single(p: &Params) -> Result<Cluster> {
        let server = rx::server_with(Text, config())?;
        let mut c = Cluster {
            servers: vec![server],
            brokers: Vec::new(),
            clients: Vec::new(),
            timed: 0,
            epoch: Instant::now(),
            _redis: None,
        };
        c.connect(0, p.clients)?;
        Ok(c)
    }

    fn pair(p: &Params) -> Result<Cluster> {
        let redis = Redis::start()?;
        let mut c = Cluster {
            servers: Vec::new(),
            brokers: Vec::new(),
            clients: Vec::new(),
            timed: 0,
            epoch: Instant::now(),
            _redis: None,
        };
        for _ in 0..2 {
            // Room for a whole burst: a full publish queue drops (counted; checked below).
            let broker = RedisBroker::new(
                RedisConfig::new(&redis.url())?.queue_capacity(p.messages + p.latency_messages),
            )?;
            c.servers
                .push(rx::server_with(Text, config().broker(broker.clone()))?);
            ensure!(
                broker.wait_connected(Duration::from_secs(10)),
                "s1: {} did not connect to Redis",
                broker.name()
            );
            c.brokers.push(broker);
        }
        c._redis = Some(redis);
        c.connect(0, p.clients / 2)?;
        // The timed client is B's first: its deliveries cross instances.
        c.timed = c.clients.len();
        c.connect(1, p.clients - p.clients / 2)?;
        Ok(c)
    }

    fn connect(&mut self, server: usize, n: usize) -> Result<()> {
        let addr = self.servers[server].local_addr();
        for _ in 0..n {
            let tally = Arc::new(Tally::default());
            let client = rx::client(addr, PATH, Text)?;
            let (t, epoch) = (tally.clone(), self.epoch);
            client.subscribe(move |m: String| {
                if let Some(sent) = m.strip_prefix("t").and_then(|n| n.parse::<f64>().ok()) {
                    let now = epoch.elapsed().as_secs_f64() * 1e6;
                    lock(&t.latencies_us).push(now - sent);
                }
                t.count.fetch_add(1, Ordering::Relaxed);
            });
            self.clients.push((client, tally));
        }
        let s = &self.servers[server];
        wait_until(n, REGISTER_WAIT, || s.connections(PATH).len())
    }

    fn measure(&self, p: &Params) -> Result<Sample> {
        let a = &self.servers[0];
        let payload = "x".repeat(p.size);
        let path: Arc<str> = PATH.into();
        let t = Instant::now();
        for _ in 0..p.messages {
            a.send(TaggedData::new(path.clone(), payload.clone()))?;
        }
        self.wait_counts(p.messages, t)?;
        let secs = t.elapsed().as_secs_f64();
        // One message a millisecond: each crosses alone, nothing queued behind it.
        for _ in 0..p.latency_messages {
            let sent = self.epoch.elapsed().as_secs_f64() * 1e6;
            a.send(TaggedData::new(path.clone(), format!("t{sent:.3}")))?;
            std::thread::sleep(Duration::from_millis(1));
        }
        self.wait_counts(p.messages + p.latency_messages, t)?;
        for b in &self.brokers {
            let s = b.stats();
            ensure!(
                s.dropped == 0 && s.lost == 0,
                "s1: {} dropped {} and lost {}",
                b.name(),
                s.dropped,
                s.lost
            );
        }
        let mut lat = lock(&self.clients[self.timed].1.latencies_us).clone();
        ensure!(!lat.is_empty(), "s1: no latency sample");
        lat.sort_by(f64::total_cmp);
        Ok(Sample::from([
            ("elapsed_s".into(), secs),
            (
                "deliveries_per_s".into(),
                (self.clients.len() * p.messages) as f64 / secs,
            ),
            ("latency_p50_us".into(), lat[lat.len() / 2]),
        ]))
    }

    /// Waits (bounded) until every client has `n` messages.
    fn wait_counts(&self, n: usize, t: Instant) -> Result<()> {
        for (i, (_, tally)) in self.clients.iter().enumerate() {
            while tally.count.load(Ordering::Relaxed) < n {
                ensure!(
                    t.elapsed() < CLIENT_DEADLINE,
                    "s1: client {i} has {} of {n} messages",
                    tally.count.load(Ordering::Relaxed)
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    fn dispose(self) {
        for (c, _) in &self.clients {
            c.dispose();
        }
        for s in &self.servers {
            s.dispose();
        }
    }
}

/// A `redis-server` of this run's own on a free port, killed when dropped.
struct Redis {
    port: u16,
    child: std::process::Child,
}

impl Redis {
    fn start() -> Result<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("s1 needs redis-server on PATH (Debian: apt-get install -y redis-server)")?;
        let redis = Redis { port, child };
        let until = Instant::now() + Duration::from_secs(10);
        while !redis.answers() {
            ensure!(
                Instant::now() < until,
                "s1: redis-server on port {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn answers(&self) -> bool {
        let mut reply = [0u8; 7];
        TcpStream::connect(("127.0.0.1", self.port))
            .and_then(|mut s| {
                s.write_all(b"PING\r\n")?;
                s.read_exact(&mut reply)
            })
            .is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
