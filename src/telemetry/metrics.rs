//! Metrics over the counters components already keep.
//!
//! Every component counts in relaxed atomics ([`Stats`]). This module lists the live counter
//! sets in a process-wide registry (weak references plus precomputed attributes) and registers
//! *observable* instruments whose callbacks read them when the meter provider collects: nothing
//! is recorded per message. Only the handshake histogram is synchronous (once per handshake).
//!
//! Instruments are registered with the global meter provider when a component is created and
//! the global provider is not the one they were registered with (so the first component
//! registers them, and so does the first component after an application installs a provider),
//! and by [`register_instruments`]. Each registration has a generation; callbacks of an older
//! one observe nothing, so registering twice with one provider never reports twice.
//!
//! Locks: the registry lock is never held while calling into OpenTelemetry (callbacks copy the
//! live entries and observe after releasing it), so a collection running a callback and a
//! registration can never wait on each other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{AsyncInstrument, Histogram, Meter, MeterProvider};
use opentelemetry::{global, InstrumentationScope, KeyValue};
use parking_lot::Mutex;

use crate::stats::Stats;
use crate::telemetry::{key, metric};

type Provider = dyn MeterProvider + Send + Sync;

/// Which counters a tracked set reports (a server has no connect attempts). A scale-out
/// broker's counters go to the `rxplus.broker.*` instruments only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Server,
    Client,
    Gateway,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Broker,
}

/// How an opening handshake ended (attribute `outcome` of the handshake histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Failed,
    Timeout,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
        }
    }
}

/// The attribute sets of one tracked counter set, built once.
#[derive(Debug)]
struct Attrs {
    /// `component`, and `path` when there is one.
    base: Vec<KeyValue>,
    /// `base` + `reason=overflow` + `policy`.
    overflow: Vec<KeyValue>,
    /// `base` + `reason=disconnected`.
    disconnected: Vec<KeyValue>,
}

/// A component's counters as registered for metrics. The registry holds them weakly: when
/// the component (the last holder) is gone, its points stop.
#[derive(Clone)]
pub(crate) struct Tracked {
    pub(crate) stats: Arc<Stats>,
    attrs: Arc<Attrs>,
}

impl Tracked {
    /// Records one opening handshake's duration with this set's attributes.
    pub(crate) fn record_handshake(&self, outcome: Outcome, elapsed: Duration) {
        record_handshake_with(&self.attrs.base, outcome, elapsed);
    }
}

struct Entry {
    stats: Weak<Stats>,
    kind: Kind,
    attrs: Arc<Attrs>,
}

struct Registry {
    entries: Vec<Entry>,
    /// The provider the current instruments are registered with (weak: never keeps an
    /// application's provider alive, and keeps its address from being reused).
    provider: Option<Weak<Provider>>,
    histogram: Option<Histogram<f64>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
    provider: None,
    histogram: None,
});
/// Serialises registrations (held while building instruments; never taken by callbacks).
static REGISTERING: Mutex<()> = Mutex::new(());
/// The current registration; callbacks of any other observe nothing.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Handshake duration buckets, seconds (loopback handshakes take well under a millisecond;
/// `handshake_timeout` defaults to 10 s).
const HANDSHAKE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Lists `stats` for metrics with attributes `component` and `path` (when given; without a
/// query string, which may carry secrets), and registers the instruments with the global meter provider if
/// it changed since they were last registered. `policy` is the outbound overflow policy's name.
pub(crate) fn track(
    stats: Arc<Stats>,
    kind: Kind,
    component: &Arc<str>,
    path: Option<&str>,
    policy: &'static str,
) -> Tracked {
    let mut base = vec![KeyValue::new(key::COMPONENT, component.clone())];
    if let Some(path) = path {
        base.push(KeyValue::new(key::PATH, path.to_owned()));
    }
    let with = |extra: &[KeyValue]| base.iter().chain(extra).cloned().collect::<Vec<_>>();
    let attrs = Arc::new(Attrs {
        overflow: with(&[
            KeyValue::new(key::REASON, "overflow"),
            KeyValue::new(key::POLICY, policy),
        ]),
        disconnected: with(&[KeyValue::new(key::REASON, "disconnected")]),
        base,
    });
    {
        let mut reg = REGISTRY.lock();
        reg.entries.retain(|e| e.stats.strong_count() > 0);
        reg.entries.push(Entry {
            stats: Arc::downgrade(&stats),
            kind,
            attrs: attrs.clone(),
        });
    }
    let provider = global::meter_provider();
    if !is_current(&provider) {
        register_with(provider, false);
    }
    Tracked { stats, attrs }
}

/// Records one opening handshake's duration for a component whose path is not known (a
/// server's failed handshakes: the path is the peer's choice, so it is not an attribute).
pub(crate) fn record_handshake(component: &Arc<str>, outcome: Outcome, elapsed: Duration) {
    record_handshake_with(
        &[KeyValue::new(key::COMPONENT, component.clone())],
        outcome,
        elapsed,
    );
}

fn record_handshake_with(attrs: &[KeyValue], outcome: Outcome, elapsed: Duration) {
    // Cloned out of the lock: recording calls into the SDK.
    let Some(histogram) = REGISTRY.lock().histogram.clone() else {
        return;
    };
    let mut all = Vec::with_capacity(attrs.len() + 1);
    all.extend_from_slice(attrs);
    all.push(KeyValue::new(key::OUTCOME, outcome.as_str()));
    histogram.record(elapsed.as_secs_f64(), &all);
}

/// Registers the crate's instruments with the current global meter provider.
///
/// Components register them by themselves when they are created (with whatever global
/// provider is set then), and `install` (feature `telemetry`) calls this. Call it after
/// `opentelemetry::global::set_meter_provider` when components created before may be the only
/// ones: their counters are then exported by the new provider too. Registering again is
/// harmless: the previous registration stops observing, so nothing is reported twice.
pub fn register_instruments() {
    register_with(global::meter_provider(), true);
}

fn is_current(provider: &Arc<Provider>) -> bool {
    REGISTRY
        .lock()
        .provider
        .as_ref()
        .is_some_and(|w| std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(provider)))
}

/// Registers every instrument with `provider` under a new generation; unless `force`, only if
/// the instruments are not already registered with it.
fn register_with(provider: Arc<Provider>, force: bool) {
    let _one = REGISTERING.lock();
    if !force && is_current(&provider) {
        return;
    }
    // Built under the next generation; switched to it only once complete, so a collection
    // in between still sees the previous registration's points.
    let gen = GENERATION.load(Ordering::Acquire) + 1;
    let meter = provider.meter_with_scope(
        InstrumentationScope::builder("rxplus")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    build_instruments(&meter, gen);
    let histogram = meter
        .f64_histogram(metric::HANDSHAKE_DURATION)
        .with_unit("s")
        .with_description("WebSocket opening handshake durations (a client's TCP connect included)")
        .with_boundaries(HANDSHAKE_BUCKETS.to_vec())
        .build();
    {
        let mut reg = REGISTRY.lock();
        reg.provider = Some(Arc::downgrade(&provider));
        reg.histogram = Some(histogram);
    }
    GENERATION.store(gen, Ordering::Release);
}

/// Calls `f` for every live tracked set, if `gen` is the current registration. Dead entries
/// are pruned; the lock is released before `f` runs.
fn each_live(gen: u64, mut f: impl FnMut(&Stats, Kind, &Attrs)) {
    if GENERATION.load(Ordering::Acquire) != gen {
        return;
    }
    let live: Vec<(Arc<Stats>, Kind, Arc<Attrs>)> = {
        let mut reg = REGISTRY.lock();
        reg.entries.retain(|e| e.stats.strong_count() > 0);
        reg.entries
            .iter()
            .filter_map(|e| Some((e.stats.upgrade()?, e.kind, e.attrs.clone())))
            .collect()
    };
    for (stats, kind, attrs) in &live {
        f(stats, *kind, attrs);
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// An observable counter reporting `read` for every live set of kind `only`, or of every
/// WebSocket and gateway kind (not brokers) when `only` is None.
fn counter(
    meter: &Meter,
    gen: u64,
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    only: Option<Kind>,
    read: fn(&Stats) -> u64,
) {
    meter
        .u64_observable_counter(name)
        .with_unit(unit)
        .with_description(description)
        .with_callback(move |o: &dyn AsyncInstrument<u64>| {
            each_live(gen, |stats, kind, attrs| {
                if only.map_or(kind != Kind::Broker, |only| only == kind) {
                    o.observe(read(stats), &attrs.base);
                }
            })
        })
        .build();
}

// The SDK keeps a callback for the provider's life whether or not the instrument handle is
// kept, so the handles are dropped.
fn build_instruments(meter: &Meter, gen: u64) {
    counter(
        meter,
        gen,
        metric::MESSAGES_IN,
        "{message}",
        "Data messages received",
        None,
        |s| s.received().0,
    );
    counter(
        meter,
        gen,
        metric::MESSAGES_OUT,
        "{message}",
        "Data messages written to sockets",
        None,
        |s| load(&s.messages_out),
    );
    counter(
        meter,
        gen,
        metric::BYTES_IN,
        "By",
        "Payload bytes received",
        None,
        |s| s.received().1,
    );
    counter(
        meter,
        gen,
        metric::BYTES_OUT,
        "By",
        "Payload bytes written to sockets",
        None,
        |s| load(&s.bytes_out),
    );
    counter(
        meter,
        gen,
        metric::CONNECT_ATTEMPTS,
        "{attempt}",
        "Client connection attempts, the first included",
        Some(Kind::Client),
        |s| load(&s.connect_attempts),
    );
    counter(
        meter,
        gen,
        metric::GATEWAY_GAPS,
        "{message}",
        "Missing sequence numbers reported as gaps on gateway streams",
        Some(Kind::Gateway),
        |s| load(&s.gaps),
    );
    counter(
        meter,
        gen,
        metric::GATEWAY_RESUMES,
        "{resume}",
        "Resumable gateway links resumed on a new transport",
        Some(Kind::Gateway),
        |s| load(&s.resumes),
    );
    counter(
        meter,
        gen,
        metric::GATEWAY_REPLAYED,
        "{message}",
        "Frames sent again by resumes",
        Some(Kind::Gateway),
        |s| load(&s.replayed),
    );
    counter(
        meter,
        gen,
        metric::GATEWAY_DUPLICATES,
        "{message}",
        "Replayed frames received again and dropped",
        Some(Kind::Gateway),
        |s| load(&s.duplicates),
    );
    counter(
        meter,
        gen,
        metric::GATEWAY_RESUME_LOST,
        "{message}",
        "Frames sent on resumable links that the other side never got",
        Some(Kind::Gateway),
        |s| load(&s.resume_lost),
    );
    counter(
        meter,
        gen,
        metric::DECODE_ERRORS,
        "{error}",
        "Received messages that failed to decode",
        None,
        |s| load(&s.decode_errors),
    );
    meter
        .u64_observable_counter(metric::DROPPED)
        .with_unit("{message}")
        .with_description(
            "Outbound items dropped: by the overflow policy (reason=overflow, policy) or for \
             want of a connection (reason=disconnected)",
        )
        .with_callback(move |o: &dyn AsyncInstrument<u64>| {
            each_live(gen, |stats, kind, attrs| {
                if kind == Kind::Broker {
                    return;
                }
                let overflow = load(&stats.overflow_dropped);
                o.observe(overflow, &attrs.overflow);
                o.observe(
                    load(&stats.dropped).saturating_sub(overflow),
                    &attrs.disconnected,
                );
            })
        })
        .build();
    build_broker_instruments(meter, gen);
    meter
        .i64_observable_up_down_counter(metric::CONNECTIONS_OPEN)
        .with_unit("{connection}")
        .with_description("Connections open now")
        .with_callback(move |o: &dyn AsyncInstrument<i64>| {
            each_live(gen, |stats, kind, attrs| {
                if kind == Kind::Broker {
                    return;
                }
                // Closed is counted after opened, so a relaxed read may see one more close
                // than open for an instant; never report a negative count.
                let open =
                    load(&stats.connections_opened).saturating_sub(load(&stats.connections_closed));
                o.observe(i64::try_from(open).unwrap_or(i64::MAX), &attrs.base);
            })
        })
        .build();
}

/// The scale-out broker's instruments (`rxplus.broker.*`), over the same counters: a broker
/// counts publications in `messages_out`, receptions in `messages_in`, lost messages in `gaps`
/// and its Redis connections in `connections_opened` / `connections_closed`.
fn build_broker_instruments(meter: &Meter, gen: u64) {
    type Read = fn(&Stats) -> u64;
    let counters: [(&'static str, &'static str, &'static str, Read); 5] = [
        (
            metric::BROKER_PUBLISHED,
            "{message}",
            "Path messages the broker published for other instances",
            |s| load(&s.messages_out),
        ),
        (
            metric::BROKER_RECEIVED,
            "{message}",
            "Path messages of other instances received through the broker",
            |s| s.received().0,
        ),
        (
            metric::BROKER_DROPPED,
            "{message}",
            "Path messages not published (broker down, queue full, publish failed)",
            |s| load(&s.dropped),
        ),
        (
            metric::BROKER_LOST,
            "{message}",
            "Messages of other instances that never arrived (sequence numbers skipped)",
            |s| load(&s.gaps),
        ),
        (
            metric::BROKER_DECODE_ERRORS,
            "{error}",
            "Broker envelopes that could not be read",
            |s| load(&s.decode_errors),
        ),
    ];
    for (name, unit, description, read) in counters {
        counter(
            meter,
            gen,
            name,
            unit,
            description,
            Some(Kind::Broker),
            read,
        );
    }
    meter
        .i64_observable_up_down_counter(metric::BROKER_CONNECTIONS)
        .with_unit("{connection}")
        .with_description("Broker connections up now (2 when publishing and subscribing)")
        .with_callback(move |o: &dyn AsyncInstrument<i64>| {
            each_live(gen, |stats, kind, attrs| {
                if kind == Kind::Broker {
                    let up = load(&stats.connections_opened)
                        .saturating_sub(load(&stats.connections_closed));
                    o.observe(i64::try_from(up).unwrap_or(i64::MAX), &attrs.base);
                }
            })
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
    use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

    /// One point: attributes and value.
    type Point = (Vec<KeyValue>, u64);

    /// Keeps the `rxplus.ws.messages.in` points of the last export.
    #[derive(Clone, Default)]
    struct Last(Arc<Mutex<Vec<Point>>>);

    impl PushMetricExporter for Last {
        async fn export(&self, rm: &ResourceMetrics) -> OTelSdkResult {
            let mut points = Vec::new();
            for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
                if m.name() != metric::MESSAGES_IN {
                    continue;
                }
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                    for p in sum.data_points() {
                        points.push((p.attributes().cloned().collect(), p.value()));
                    }
                }
            }
            *self.0.lock() = points;
            Ok(())
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
        fn temporality(&self) -> Temporality {
            Temporality::Cumulative
        }
    }

    fn points_of(last: &Last, component: &str) -> Vec<u64> {
        let comp = KeyValue::new(key::COMPONENT, component.to_owned());
        last.0
            .lock()
            .iter()
            .filter(|(a, _)| a.contains(&comp))
            .map(|(_, v)| *v)
            .collect()
    }

    #[test]
    fn re_registration_keeps_one_point_per_set_with_its_value_and_dead_sets_are_pruned() {
        let last = Last::default();
        let reader = PeriodicReader::builder(last.clone())
            .with_interval(Duration::from_secs(3600))
            .build();
        // The SDK's provider is a handle over shared state: the clone flushes the same one.
        // Global, so a component created meanwhile by another test keeps this registration.
        let sdk = SdkMeterProvider::builder().with_reader(reader).build();
        global::set_meter_provider(sdk.clone());
        let name: Arc<str> = Arc::from("metrics-unit-test");
        // Lives throughout, so every flush exports something (the SDK skips empty exports).
        let _other = track(
            Arc::new(Stats::default()),
            Kind::Server,
            &Arc::from("metrics-unit-test-other"),
            None,
            "block",
        );
        let stats = Arc::new(Stats::default());
        let tracked = track(stats.clone(), Kind::Client, &name, Some("/p"), "block");
        assert_eq!(
            tracked.attrs.base,
            vec![
                KeyValue::new(key::COMPONENT, "metrics-unit-test"),
                KeyValue::new(key::PATH, "/p")
            ]
        );
        // A live connection's counter: counted while it runs.
        let mut conn = stats.in_counter();
        conn.record(10);
        conn.record(10);
        // track registered with the new global provider; twice more on the same provider:
        register_instruments();
        register_instruments();
        track(
            Arc::new(Stats::default()),
            Kind::Server,
            &name,
            None,
            "block",
        ); // no-op
        sdk.force_flush().unwrap();
        assert_eq!(points_of(&last, "metrics-unit-test"), vec![2]);

        drop(tracked);
        drop(conn);
        drop(stats);
        sdk.force_flush().unwrap();
        assert!(points_of(&last, "metrics-unit-test").is_empty());
        assert_eq!(points_of(&last, "metrics-unit-test-other"), vec![0]);
        assert!(REGISTRY
            .lock()
            .entries
            .iter()
            .all(|e| e.stats.strong_count() > 0));
    }
}
