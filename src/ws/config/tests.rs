use super::*;

fn field(e: Error) -> &'static str {
    match e {
        Error::Config { field, .. } => field,
        other => panic!("not a config error: {other}"),
    }
}

#[test]
fn each_bad_field_is_named() {
    let d = WSConfig::default;
    assert_eq!(
        field(d().ping_interval(None).validate().unwrap_err()),
        "ping_timeout"
    );
    assert_eq!(
        field(
            d().outbound(0, OverflowStrategy::DropNew)
                .validate()
                .unwrap_err()
        ),
        "outbound_capacity"
    );
    assert!(d()
        .outbound(0, OverflowStrategy::Disconnect)
        .validate()
        .is_ok());
    assert_eq!(
        field(d().stream_capacity(0).validate().unwrap_err()),
        "stream_capacity"
    );
    assert_eq!(
        field(d().max_frame_size(0).validate().unwrap_err()),
        "max_frame_size"
    );
    assert_eq!(
        field(
            d().handshake_timeout(Duration::ZERO)
                .validate()
                .unwrap_err()
        ),
        "handshake_timeout"
    );
    assert_eq!(
        field(
            d().retry(RetryPolicy::default().factor(0.5))
                .validate()
                .unwrap_err()
        ),
        "retry.factor"
    );
    assert_eq!(
        field(
            d().retry(RetryPolicy::default().jitter(2.0))
                .validate()
                .unwrap_err()
        ),
        "retry.jitter"
    );
    assert_eq!(field(d().name("").validate().unwrap_err()), "name");
    assert!(d().no_heartbeat().validate().is_ok());
}

#[test]
fn conn_cfg_validation_missing_host_and_port() {
    assert_eq!(
        field(WSConnectionConfig::new("", 80, "/").unwrap_err()),
        "host"
    );
    // The port is a u16: out of range cannot be built, and is an error in a URL.
    assert!(matches!(
        WSConnectionConfig::from_url("ws://h:65536/"),
        Err(Error::InvalidUrl { .. })
    ));
    assert_eq!(
        field(WSConnectionConfig::new("h", 1, "").unwrap_err()),
        "path"
    );
    assert_eq!(
        WSConnectionConfig::new("[::1]", 1, "/")
            .unwrap()
            .authority(),
        "[::1]:1"
    );
}

#[test]
fn retry_delay_grows_caps_and_jitters_within_bounds() {
    let p = RetryPolicy::default();
    for n in 0..20 {
        let base = (0.1 * 2f64.powi(n)).min(10.0);
        let d = p.delay(n as u32).as_secs_f64();
        assert!(d >= base * 0.9 - 1e-9 && d <= base * 1.1 + 1e-9, "{n}: {d}");
    }
}

#[test]
fn invalid_urls_are_rejected_with_the_url() {
    for u in [
        "",
        "localhost:80",
        "http://h/",
        "wss://",
        "ws://",
        "ws://h:99999/",
    ] {
        let e = WSConnectionConfig::from_url(u).unwrap_err();
        assert!(matches!(e, Error::InvalidUrl { .. }), "{u}: {e}");
    }
    assert_eq!(WSConnectionConfig::from_url("ws://h").unwrap().path(), "/");
}

#[test]
fn wss_urls_need_the_tls_feature_and_default_to_port_443() {
    let r = WSConnectionConfig::from_url("wss://h/a");
    if cfg!(feature = "tls") {
        let c = r.unwrap();
        assert!(c.is_secure());
        assert_eq!((c.port(), c.url().as_str()), (443, "wss://h:443/a"));
        let other = c.with_path("/b").unwrap();
        assert!(other.is_secure(), "a group's paths keep the scheme");
        let plain = WSConnectionConfig::from_url("ws://h/a").unwrap();
        assert!(!plain.is_secure());
        assert_eq!(plain.port(), 80);
    } else {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("`tls` feature"), "{e}");
    }
}
