//! Log volume under a flood of denials, through the real path. Alone in its binary: `tracing` caches each
//! call site's interest process-wide, so a scoped subscriber in one test races with tests running beside it
//! on other threads, and the lines it should capture can be filtered out.

use crate::common::mock::MockTencent;
use crate::common::*;
use std::time::Duration;

/// Collects what a `tracing` subscriber writes, for tests that read the log.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A flood of denials writes at most 20 `rate_limited` lines per tenant per second; the first line of the
/// next second says how many were left out, and metrics still count every denial. (The test runtime is
/// single-threaded, so the capturing subscriber sees the gateway's events.)
#[tokio::test]
async fn a_flood_of_denials_writes_a_capped_count_of_log_lines() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Callsites another test registered while no subscriber of this thread existed may have cached "never":
    // with every test in one binary, re-evaluate them now that this one does.
    tracing::callsite::rebuild_interest_cache();
    let mock = MockTencent::start(SECRET_KEY).await;
    let gw = TestGateway::start(compile(&config_yaml(&mock.endpoint(), PHONE_LIMITS, ""))).await;
    assert_eq!(gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "0")).await.status, 200);
    for code in 1..=50 {
        gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", &code.to_string()))
            .await
            .assert_error(429, "rate_limited");
    }
    gw.clock.advance(Duration::from_secs(1));
    gw.post("/v1/sms/send", &native("+8613800138000", "SignIn", "51")).await.assert_error(429, "rate_limited");

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let denials: Vec<&str> = log.lines().filter(|l| l.contains("outcome=\"rate_limited\"")).collect();
    assert_eq!(denials.len(), 21, "{log}");
    assert!(denials[..20].iter().all(|l| !l.contains("suppressed")), "{log}");
    assert!(denials[20].contains("suppressed=30"), "{}", denials[20]);
    let metrics = gw.http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"smsgate_requests_total{tenant="acme",usage="SignIn",code="rate_limited"} 51"#),
        "{metrics}"
    );
    assert_eq!(mock.seen().len(), 1);
}
