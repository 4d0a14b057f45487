//! Telemetry switched on, for the `rxplus-otel` variant of w1: the crate's own OpenTelemetry
//! setup (`rxplus::telemetry::install`: `log` bridged to a logger provider at INFO, a meter
//! provider reading the crate's instruments every 100 ms) with exporters that drop what they
//! get, so the figure is the cost of the instrumentation and the SDK, not of printing.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogProcessor, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use rxplus::telemetry::TelemetryGuard;

/// The variant that runs with telemetry on.
pub const VARIANT: &str = "rxplus-otel";

#[derive(Debug)]
struct Discard;

impl LogProcessor for Discard {
    fn emit(&self, _: &mut SdkLogRecord, _: &InstrumentationScope) {}
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl PushMetricExporter for Discard {
    async fn export(&self, _: &ResourceMetrics) -> OTelSdkResult {
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

/// Installs telemetry for the rest of this (child) process when `variant` asks for it.
pub fn install_for(variant: &str) -> Result<()> {
    static GUARD: OnceLock<TelemetryGuard> = OnceLock::new();
    if variant != VARIANT || GUARD.get().is_some() {
        return Ok(());
    }
    let logger = SdkLoggerProvider::builder()
        .with_log_processor(Discard)
        .build();
    let reader = PeriodicReader::builder(Discard)
        .with_interval(Duration::from_millis(100))
        .build();
    let meter = SdkMeterProvider::builder().with_reader(reader).build();
    let guard = rxplus::telemetry::install(logger, meter)?;
    let _ = GUARD.set(guard);
    Ok(())
}
