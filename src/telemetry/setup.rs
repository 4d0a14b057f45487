//! The opt-in OpenTelemetry setup (cargo feature `telemetry`).

use log::LevelFilter;
use opentelemetry_appender_log::OpenTelemetryLogBridge;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::error::{Error, Result};
use crate::telemetry::register_instruments;

/// Keeps the providers [`install`] installed; dropping it flushes and shuts them down.
///
/// On drop, in this order: the logger provider is flushed (the records so far are exported);
/// the meter provider is shut down, which collects and exports one last time (a flush before
/// it would export the same points twice); `log`'s max level is set to `Off` (the bridge stays
/// the process's `log` logger: `log` cannot remove one); the logger provider is shut down,
/// exporting whatever was logged meanwhile, such as a failure of the steps before. Failures are
/// logged at WARN, never panicked on. Keep the guard for as long as you want telemetry,
/// typically in `main`.
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    logger: SdkLoggerProvider,
    meter: SdkMeterProvider,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard").finish_non_exhaustive()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.logger.force_flush() {
            log::warn!(error:% = e; "OpenTelemetry logger provider flush failed");
        }
        if let Err(e) = self.meter.shutdown() {
            log::warn!(error:% = e; "OpenTelemetry meter provider shutdown failed");
        }
        // From here on records would only reach a shut-down provider: stop making them.
        log::set_max_level(LevelFilter::Off);
        // Nothing is left to report a failure to.
        let _ = self.logger.shutdown();
    }
}

/// Installs OpenTelemetry for this process with any exporters: `log` records (every crate's,
/// not only rxplus's) go to `logger_provider` through `opentelemetry-appender-log`, at
/// `log`'s max level INFO, and `meter_provider` becomes the global meter provider with the
/// crate's instruments registered (components created before are included).
///
/// Per-message DEBUG records are off at INFO; `log::set_max_level(log::LevelFilter::Debug)`
/// turns them on at any time.
///
/// ```no_run
/// use opentelemetry_sdk::logs::SdkLoggerProvider;
/// use opentelemetry_sdk::metrics::SdkMeterProvider;
///
/// // Any exporters: the SDK's builders take any `LogExporter` / `PushMetricExporter` (OTLP,
/// // a file, ...) or processors and readers of your own.
/// let logs = SdkLoggerProvider::builder()
///     .with_batch_exporter(opentelemetry_stdout::LogExporter::default())
///     .build();
/// let metrics = SdkMeterProvider::builder()
///     .with_periodic_exporter(opentelemetry_stdout::MetricExporter::default())
///     .build();
/// let _telemetry = rxplus::telemetry::install(logs, metrics)?;
/// log::set_max_level(log::LevelFilter::Debug); // per-message records too
/// # Ok::<(), rxplus::Error>(())
/// ```
///
/// # Errors
/// [`Error::Config`] (field `logger`) when a `log` logger is already installed: `log` allows
/// one per process. Nothing is installed then, and both providers are dropped (shut down). To
/// keep your logger, set the meter provider yourself and call [`register_instruments`].
pub fn install(
    logger_provider: SdkLoggerProvider,
    meter_provider: SdkMeterProvider,
) -> Result<TelemetryGuard> {
    let bridge = OpenTelemetryLogBridge::new(&logger_provider);
    log::set_boxed_logger(Box::new(bridge)).map_err(|_| {
        Error::config(
            "logger",
            "a `log` logger is already installed in this process (log allows one); \
             install telemetry before any other logger",
        )
    })?;
    log::set_max_level(LevelFilter::Info);
    opentelemetry::global::set_meter_provider(meter_provider.clone());
    register_instruments();
    Ok(TelemetryGuard {
        logger: logger_provider,
        meter: meter_provider,
    })
}

/// [`install`] with the `opentelemetry-stdout` exporters: log records are printed in batches
/// (from the SDK's batch thread), metrics every 60 s (`OTEL_METRIC_EXPORT_INTERVAL`
/// overrides) and once more when the guard is dropped.
///
/// ```no_run
/// let _telemetry = rxplus::telemetry::init_stdout()?;
/// # Ok::<(), rxplus::Error>(())
/// ```
///
/// # Errors
/// As [`install`]: [`Error::Config`] when a `log` logger is already installed.
pub fn init_stdout() -> Result<TelemetryGuard> {
    let logger = SdkLoggerProvider::builder()
        .with_batch_exporter(opentelemetry_stdout::LogExporter::default())
        .build();
    let meter = SdkMeterProvider::builder()
        .with_periodic_exporter(opentelemetry_stdout::MetricExporter::default())
        .build();
    install(logger, meter)
}
