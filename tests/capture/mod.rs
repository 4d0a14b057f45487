//! OpenTelemetry capture for the telemetry tests: a `log` → OpenTelemetry bridge whose logger
//! provider keeps every record, and a meter provider whose exporter keeps the last export.
//!
//! Built on the SDK's public traits (`LogProcessor`, `PushMetricExporter` with a
//! `PeriodicReader` flushed on demand), not on the SDK's in-memory exporters: those need the
//! SDK's `testing` feature, which builds tokio.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use log::LevelFilter;
use opentelemetry::logs::AnyValue;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogProcessor, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use parking_lot::Mutex;

/// One log record as the OpenTelemetry logger provider received it.
#[derive(Debug, Clone)]
pub struct Rec {
    /// The body: the event name.
    pub name: String,
    pub level: log::Level,
    pub attrs: HashMap<String, String>,
}

impl Rec {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

/// One metric data point of an export.
#[derive(Debug, Clone)]
pub struct Point {
    pub name: String,
    pub unit: String,
    pub attrs: HashMap<String, String>,
    /// Sums and gauges: the value; histograms: the sum.
    pub value: f64,
    /// Histograms: the count; otherwise 1.
    pub count: u64,
}

impl Point {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

fn text(v: &AnyValue) -> String {
    match v {
        AnyValue::String(s) => s.to_string(),
        AnyValue::Int(i) => i.to_string(),
        AnyValue::Double(d) => d.to_string(),
        AnyValue::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[derive(Debug, Clone, Default)]
struct Keep(Arc<Mutex<Vec<Rec>>>);

impl LogProcessor for Keep {
    fn emit(&self, r: &mut SdkLogRecord, _: &InstrumentationScope) {
        let level = r
            .severity_text()
            .and_then(|t| t.parse().ok())
            .unwrap_or(log::Level::Trace);
        self.0.lock().push(Rec {
            name: r.body().map(text).unwrap_or_default(),
            level,
            attrs: r
                .attributes_iter()
                .map(|(k, v)| (k.to_string(), text(v)))
                .collect(),
        });
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

#[derive(Clone, Default)]
struct LastExport(Arc<Mutex<Vec<Point>>>);

impl PushMetricExporter for LastExport {
    async fn export(&self, rm: &ResourceMetrics) -> OTelSdkResult {
        let mut points = Vec::new();
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            let mut push = |attrs: HashMap<String, String>, value: f64, count: u64| {
                points.push(Point {
                    name: m.name().to_owned(),
                    unit: m.unit().to_owned(),
                    attrs,
                    value,
                    count,
                })
            };
            macro_rules! points {
                ($data:expr) => {
                    match $data {
                        MetricData::Sum(s) => {
                            for p in s.data_points() {
                                push(kv(p.attributes()), p.value() as f64, 1);
                            }
                        }
                        MetricData::Gauge(g) => {
                            for p in g.data_points() {
                                push(kv(p.attributes()), p.value() as f64, 1);
                            }
                        }
                        MetricData::Histogram(h) => {
                            for p in h.data_points() {
                                push(kv(p.attributes()), p.sum() as f64, p.count());
                            }
                        }
                        MetricData::ExponentialHistogram(_) => {}
                    }
                };
            }
            match m.data() {
                AggregatedMetrics::F64(d) => points!(d),
                AggregatedMetrics::U64(d) => points!(d),
                AggregatedMetrics::I64(d) => points!(d),
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

fn kv<'a>(attrs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> HashMap<String, String> {
    attrs
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

/// A logger provider that keeps every record and a meter provider whose exporter keeps the
/// last export (it exports only when flushed or shut down).
pub struct Otel {
    pub logger: SdkLoggerProvider,
    pub meter: SdkMeterProvider,
    records: Arc<Mutex<Vec<Rec>>>,
    last: Arc<Mutex<Vec<Point>>>,
}

static OTEL: OnceLock<Otel> = OnceLock::new();

/// Installs a capture once per test process (`log` allows one logger) at `level`: the `log`
/// bridge and the global meter provider, as `rxplus::telemetry::install` does.
pub fn otel(level: LevelFilter) -> &'static Otel {
    OTEL.get_or_init(|| {
        let otel = Otel::new();
        let bridge = opentelemetry_appender_log::OpenTelemetryLogBridge::new(&otel.logger);
        log::set_boxed_logger(Box::new(bridge)).expect("one logger per test process");
        log::set_max_level(level);
        opentelemetry::global::set_meter_provider(otel.meter.clone());
        otel
    })
}

impl Otel {
    /// Providers, not installed.
    pub fn new() -> Otel {
        let keep = Keep::default();
        let records = keep.0.clone();
        let logger = SdkLoggerProvider::builder()
            .with_log_processor(keep)
            .build();
        let export = LastExport::default();
        let last = export.0.clone();
        // An hour is longer than any test: exports happen when a test flushes.
        let reader = PeriodicReader::builder(export)
            .with_interval(Duration::from_secs(3600))
            .build();
        let meter = SdkMeterProvider::builder().with_reader(reader).build();
        Otel {
            logger,
            meter,
            records,
            last,
        }
    }

    /// Records so far whose `component` is one of `components`.
    pub fn records_of(&self, components: &[&str]) -> Vec<Rec> {
        self.records
            .lock()
            .iter()
            .filter(|r| r.attr("component").is_some_and(|c| components.contains(&c)))
            .cloned()
            .collect()
    }

    /// Collects and exports now; returns the points of the crate's metrics (`rxplus.*`) whose
    /// `component` is one of `components`.
    pub fn points_of(&self, components: &[&str]) -> Vec<Point> {
        self.meter.force_flush().expect("metrics flush");
        self.last_points_of(components)
    }

    /// Like [`points_of`](Self::points_of), from the last export, without collecting.
    pub fn last_points_of(&self, components: &[&str]) -> Vec<Point> {
        self.last
            .lock()
            .iter()
            .filter(|p| p.name.starts_with("rxplus."))
            .filter(|p| p.attr("component").is_some_and(|c| components.contains(&c)))
            .cloned()
            .collect()
    }
}

/// The one point of metric `name` whose attributes include every pair of `attrs`.
pub fn point<'a>(points: &'a [Point], name: &str, attrs: &[(&str, &str)]) -> &'a Point {
    let found: Vec<&Point> = points
        .iter()
        .filter(|p| p.name == name && attrs.iter().all(|(k, v)| p.attr(k) == Some(*v)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name} {attrs:?}: expected one point, got {found:#?}\nall points: {points:#?}"
    );
    found[0]
}

/// The records named `name`.
pub fn named<'a>(records: &'a [Rec], name: &str) -> Vec<&'a Rec> {
    records.iter().filter(|r| r.name == name).collect()
}

/// The one record named `name` whose attributes include `attrs`.
pub fn one<'a>(records: &'a [Rec], name: &str, attrs: &[(&str, &str)]) -> &'a Rec {
    let found: Vec<&Rec> = named(records, name)
        .into_iter()
        .filter(|r| attrs.iter().all(|(k, v)| r.attr(k) == Some(*v)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name} {attrs:?}: {found:#?}\nall: {records:#?}"
    );
    found[0]
}
