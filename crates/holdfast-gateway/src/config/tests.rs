use super::*;

#[test]
fn single_socket_reads_modes_and_the_old_booleans() {
    let read = |v: &str| serde_json::from_str::<SingleSocket>(v);
    assert_eq!(read("true").expect("a mode"), SingleSocket::User);
    assert_eq!(read("false").expect("a mode"), SingleSocket::Off);
    assert_eq!(read("\"user\"").expect("a mode"), SingleSocket::User);
    assert_eq!(read("\"device\"").expect("a mode"), SingleSocket::Device);
    assert_eq!(read("\"off\"").expect("a mode"), SingleSocket::Off);
    // Environment variables arrive as strings.
    assert_eq!(read("\"false\"").expect("a mode"), SingleSocket::Off);
    assert!(read("\"tab\"").is_err());
}

#[test]
fn defaults_are_valid_and_match_the_documentation() {
    let c = Config::default();
    c.validate().expect("defaults validate");
    assert_eq!(c.server.listen, "127.0.0.1:8080");
    assert_eq!(c.heartbeat.ping_interval_ms, 10_000);
    assert_eq!(c.heartbeat.pong_timeout_ms, 20_000);
    assert_eq!(c.limits.max_message_bytes, 65_536);
    assert_eq!(c.session.single_socket, SingleSocket::User);
    assert_eq!(c.reconnection.window_secs, 300);
    assert_eq!(c.reconnection.event_buffer_size, 100);
}

#[test]
fn invalid_values_name_their_key() {
    let mut c = Config::default();
    c.heartbeat.pong_timeout_ms = 5;
    assert_eq!(
        c.validate().expect_err("invalid").key,
        "heartbeat.pong_timeout_ms"
    );
    let mut c = Config::default();
    c.log.format = "xml".into();
    assert_eq!(c.validate().expect_err("invalid").key, "log.format");
    let mut c = Config::default();
    c.limits.body_timeout_ms = 120_000;
    assert_eq!(
        c.validate().expect_err("invalid").key,
        "limits.body_timeout_ms"
    );
}

#[test]
fn production_requires_a_secret_unless_development_is_asked_for() {
    let mut c = Config::default();
    assert_eq!(
        c.check_production().expect_err("no secret").key,
        "auth.hmac_secret"
    );
    c.server.development = true;
    c.check_production().expect("development mode");
    c.server.development = false;
    c.auth.hmac_secret = "s3cret".into();
    c.check_production().expect("a secret");
}

#[test]
fn listen_proxies_and_tls_are_checked() {
    for bad in [
        "not-an-address",
        "127.0.0.1",
        ":8080",
        "host:port",
        "::1:80",
    ] {
        let mut c = Config::default();
        c.server.listen = bad.into();
        assert_eq!(c.validate().expect_err(bad).key, "server.listen", "{bad}");
    }
    for good in [
        "0.0.0.0:80",
        "[::]:8080",
        "localhost:8080",
        "gw-1.internal:443",
    ] {
        let mut c = Config::default();
        c.server.listen = good.into();
        c.validate().expect(good);
    }
    let mut c = Config::default();
    c.server.trusted_proxies = vec!["10.0.0.0/8".into(), "nope".into()];
    assert_eq!(
        c.validate().expect_err("invalid").key,
        "server.trusted_proxies"
    );
    let mut c = Config::default();
    c.server.tls.cert = "/etc/cert.pem".into();
    assert_eq!(c.validate().expect_err("invalid").key, "server.tls");
}

#[test]
fn broker_urls_for_one_redis_tls_and_a_cluster() {
    let with = |url: &str, ca: &str, prefix: &str| {
        let mut c = Config::default();
        c.auth.hmac_secret = "a-secret-long-enough-for-the-test".into();
        c.broker.url = url.into();
        c.broker.tls_ca_file = ca.into();
        c.broker.key_prefix = prefix.into();
        c.validate().map_err(|e| e.key)
    };
    for ok in [
        "redis://127.0.0.1:6379/0",
        "rediss://redis.example:6380/",
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
        "rediss+cluster://user:pw@10.0.0.1:7000/",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster",
        "rediss+sentinel://:pw@10.0.0.1:26379/mymaster/0",
    ] {
        assert_eq!(with(ok, "", "holdfast"), Ok(()), "{ok}");
    }
    assert_eq!(with("rediss://h:1/", "/etc/ca.pem", "holdfast"), Ok(()));
    assert_eq!(with("http://h:1", "", "holdfast"), Err("broker.url"));
    assert_eq!(with("redis+cluster://", "", "holdfast"), Err("broker.url"));
    assert_eq!(
        with("redis+cluster://u:p@/0", "", "holdfast"),
        Err("broker.url")
    );
    assert_eq!(
        with("redis://h:1/", "/etc/ca.pem", "holdfast"),
        Err("broker.tls_ca_file")
    );
    assert_eq!(with("redis://h:1/", "", "hf{x}"), Err("broker.key_prefix"));
}
