//! One tenant's background work cannot starve another's: outgoing webhooks and ReportConversion run in a
//! lane per tenant (a hanging receiver or endpoint holds only its own tenant's workers), and remembered sends
//! are evicted within the tenant holding the most, so a busy tenant never pushes out a small tenant's sends.
//! A delivery receipt repeated (in one callback, or across callbacks and replicas) relays one webhook.
//! Through real sockets: the gateway in-process, the mock Tencent, webhook receivers on 127.0.0.1:0. Who
//! waited for whom is proved by counts (the hanging tenant has finished nothing when the other's work
//! arrives), not by wall-clock measurements.

use crate::common::mock::MockTencent;
use crate::common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ACME_STATUS: &str = "tencent-status-acme-0123456789";
const BETA_STATUS: &str = "tencent-status-beta-0123456789";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `acme` and `beta`, each with its own endpoint and extra lines (tenant level, 4 spaces; tencent, 6).
fn yaml(server: &str, acme: (&str, &str, &str), beta: (&str, &str, &str)) -> String {
    yaml_with(server, "", acme, beta)
}

/// [`yaml`] with top-level lines (`limits_backend`).
fn yaml_with(server: &str, top: &str, acme: (&str, &str, &str), beta: (&str, &str, &str)) -> String {
    format!(
        r#"
server:
  listen: 127.0.0.1:0
  max_body_bytes: 65536
{server}
tenants:
  acme:
    tokens: ["{TOKEN}"]
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates: [{{ usageType: Generic, templateCode: "1113" }}]
      endpoint: {}
      timeout: 1s
      status_secret: {ACME_STATUS}
{}
    conversion: {{ window: 1h }}
{}
  beta:
    tokens: ["{OTHER_TOKEN}"]
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      sdkAppId: "1400007777"
      region: ap-beijing
      templates: [{{ usageType: Generic, templateCode: "2220" }}]
      endpoint: {}
      timeout: 1s
      status_secret: {BETA_STATUS}
{}
    conversion: {{ window: 1h }}
{}
{top}
"#,
        acme.0, acme.1, acme.2, beta.0, beta.1, beta.2
    )
}

async fn send(gw: &TestGateway, token: &str, phone: &str) -> Answer {
    gw.post_as("/v1/sms/send", &native(phone, "SignIn", "123456"), Some(token)).await
}

async fn verified(gw: &TestGateway, token: &str, phone: &str) -> u16 {
    let response = gw
        .http
        .post(gw.url("/v1/sms/verified"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "phone": phone }).to_string())
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// A webhook receiver on 127.0.0.1:0: `answer` says whether it answers 200 or holds each request forever.
/// Counts the requests it has read.
struct Receiver {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(answer: bool) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap_or(0));
                        if buffer.len() < end + 4 + length {
                            continue;
                        }
                        buffer.drain(..end + 4 + length);
                        seen.fetch_add(1, Ordering::SeqCst);
                        if !answer {
                            return std::future::pending().await;
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if socket.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { url, requests }
    }

    fn webhook(&self) -> String {
        format!("    webhook: {{ url: \"{}\", secret: {WEBHOOK_SECRET} }}", self.url)
    }

    fn seen(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// One verified send per number for `token`: each converts, so each queues one `sms.converted` webhook (and
/// one ReportConversion when the tenant reports them).
async fn conversions(gw: &TestGateway, token: &str, first: u64, count: u64) {
    for n in first..first + count {
        let phone = format!("+86138{n:08}");
        assert_eq!(send(gw, token, &phone).await.status, 200);
        assert_eq!(verified(gw, token, &phone).await, 204);
    }
}

/// A tenant whose webhook receiver hangs held all 16 delivery slots of the process (each for up to a minute
/// of retries): another tenant's event waited 354 s. Now each tenant delivers in its own lane: beta's event
/// arrives while acme's 20 are all still unfinished, and acme holds at most its 4 workers.
#[tokio::test]
async fn regression_a_hanging_webhook_receiver_delays_another_tenants_events() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let (hanging, answering) = (Receiver::start(false).await, Receiver::start(true).await);
    let endpoint = mock.endpoint();
    let config = compile(&yaml("", (&endpoint, "", &hanging.webhook()), (&endpoint, "", &answering.webhook())));
    let gw = TestGateway::start_at(config, chrono::Utc::now().timestamp()).await;

    conversions(&gw, TOKEN, 0, 20).await;
    conversions(&gw, OTHER_TOKEN, 100, 1).await;
    let m = wait_for_sample(&gw, r#"smsgate_webhook_deliveries_total{tenant="beta",result="ok"}"#, 1.0).await;
    assert_eq!(answering.seen(), 1);
    for result in ["ok", "failed", "dropped"] {
        let series = format!(r#"smsgate_webhook_deliveries_total{{tenant="acme",result="{result}"}}"#);
        assert_eq!(sample(&m, &series), 0.0, "acme has finished nothing yet: {series}");
    }
    assert!((1..=4).contains(&hanging.seen()), "acme holds its own 4 workers: {}", hanging.seen());
}

/// ReportConversion had one worker for every tenant: a hanging endpoint delayed the others by over a minute.
/// Now each tenant reports in its own lane: beta's report reaches Tencent while acme's are still hanging.
#[tokio::test]
async fn regression_a_hanging_report_conversion_endpoint_delays_another_tenant() {
    let (acme_tencent, beta_tencent) = (MockTencent::start(SECRET_KEY).await, MockTencent::start(SECRET_KEY).await);
    acme_tencent.hang_reports();
    let report = "      report_conversion: true";
    let config = compile(&yaml("", (&acme_tencent.endpoint(), report, ""), (&beta_tencent.endpoint(), report, "")));
    let gw = TestGateway::start(config).await;

    conversions(&gw, TOKEN, 0, 3).await;
    conversions(&gw, OTHER_TOKEN, 100, 1).await;
    let m = wait_for_sample(&gw, r#"smsgate_report_conversion_total{tenant="beta",result="ok"}"#, 1.0).await;
    assert_eq!(beta_tencent.seen_action("ReportConversion").len(), 1);
    for result in ["ok", "failed", "dropped"] {
        let series = format!(r#"smsgate_report_conversion_total{{tenant="acme",result="{result}"}}"#);
        assert_eq!(sample(&m, &series), 0.0, "acme's reports are all still waiting: {series}");
    }
    assert_eq!(acme_tencent.seen_action("ReportConversion").len(), 1, "acme's one worker holds one call");
}

/// Remembered sends had one cap for the process: a busy tenant's sends pushed out a small tenant's, whose
/// verification then found nothing (404) and whose delivery receipt was an unknown SerialNo. Now the cap
/// evicts within the tenant holding the most: beta's one send survives acme's 1,200 (acme's oldest go).
/// (It once named acme's single oldest send; the cap is kept per shard, so that one send stays when its
/// shard holds fewer than a sixteenth of the cap, and the keyed hash makes that random: 2 runs of 3 failed.)
#[tokio::test]
async fn regression_a_busy_tenant_evicts_a_small_tenants_remembered_sends() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let endpoint = mock.endpoint();
    let config = compile(&yaml("  max_remembered_sends: 1000", (&endpoint, "", ""), (&endpoint, "", "")));
    let gw = TestGateway::start(config).await;
    let small = "+8613900139000";
    let answer = send(&gw, OTHER_TOKEN, small).await;
    assert_eq!(answer.status, 200);
    let serial = answer.json["upstream"]["serial_no"].as_str().unwrap().to_owned();

    // acme's 100 oldest sends go first, a second before the others: the log evicts by age (sends within one
    // millisecond are of no age to each other), and keeps its cap per shard (a sixteenth each, by a keyed
    // hash of the number), so which of acme's sends go is a matter of shards: most of its oldest, not one
    // named send.
    let oldest: Vec<String> = (0..100u64).map(|n| format!("+86138{n:08}")).collect();
    for phone in &oldest {
        assert_eq!(send(&gw, TOKEN, phone).await.status, 200);
    }
    gw.clock.advance(std::time::Duration::from_secs(1));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8u64 {
        let (http, url) = (gw.http.clone(), gw.url("/v1/sms/send"));
        tasks.spawn(async move {
            for n in ((worker * 150)..(worker + 1) * 150).filter(|&n| n >= 100) {
                let response = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(native(&format!("+86138{n:08}"), "SignIn", "123456"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert!(gw.gateway.services().feedback.remembered() <= 1000);
    assert!(gw.gateway.services().feedback.dropped() >= 200, "the cap evicted acme's own sends");

    // The delivery receipt still names a remembered send (another door to the same log) ...
    let report = serde_json::json!([{"user_receive_time": "2024-01-02 11:04:09", "nationcode": "86",
        "mobile": "13900139000", "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "ok",
        "sid": serial}])
    .to_string();
    let response = gw
        .http
        .post(gw.url(&format!("/v1/tencent/status/{BETA_STATUS}")))
        .header("content-type", "application/json")
        .body(report)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, r#"smsgate_delivery_reports_total{tenant="beta",country="CN",status="success"}"#), 1.0);
    assert_eq!(sample(&m, r#"smsgate_delivery_reports_total{tenant="beta",country="",status="unknown_sid"}"#), 0.0);
    // ... and its verification converts it.
    assert_eq!(verified(&gw, OTHER_TOKEN, small).await, 204, "beta's send was not evicted by acme's");
    let mut gone = 0;
    for phone in &oldest {
        gone += usize::from(verified(&gw, TOKEN, phone).await == 404);
    }
    assert!(gone >= 50, "acme's own oldest sends were: {gone} of 100 gone");
}

/// A status callback carrying the receipt of `serial` (to +86`mobile`) `copies` times; the metrics after it.
async fn receipts(gw: &TestGateway, secret: &str, (serial, mobile): (&str, &str), copies: usize) -> String {
    let one = serde_json::json!({"user_receive_time": "2024-01-02 11:04:09", "nationcode": "86",
        "mobile": mobile, "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "ok",
        "sid": serial});
    let body = serde_json::Value::Array(vec![one; copies]).to_string();
    let response = gw
        .http
        .post(gw.url(&format!("/v1/tencent/status/{secret}")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    metrics(gw).await
}

/// One delivery receipt repeated 60 times in one callback produced 61 outgoing webhooks. A send's receipt
/// is counted (and relayed) once: repeats in the same callback and in a later one are counted `repeated`.
#[tokio::test]
async fn regression_a_receipt_repeated_in_one_callback_relays_one_webhook_per_send() {
    let mock = MockTencent::start(SECRET_KEY).await;
    let answering = Receiver::start(true).await;
    let endpoint = mock.endpoint();
    let config = compile(&yaml("", (&endpoint, "", ""), (&endpoint, "", &answering.webhook())));
    let gw = TestGateway::start_at(config, chrono::Utc::now().timestamp()).await;
    let first =
        send(&gw, OTHER_TOKEN, "+8613900139000").await.json["upstream"]["serial_no"].as_str().unwrap().to_owned();
    let marker =
        send(&gw, OTHER_TOKEN, "+8613900139001").await.json["upstream"]["serial_no"].as_str().unwrap().to_owned();

    let m = receipts(&gw, BETA_STATUS, (&first, "13900139000"), 60).await;
    let series =
        |status: &str| format!(r#"smsgate_delivery_reports_total{{tenant="beta",country="CN",status="{status}"}}"#);
    assert_eq!((sample(&m, &series("success")), sample(&m, &series("repeated"))), (1.0, 59.0));
    let m = receipts(&gw, BETA_STATUS, (&first, "13900139000"), 1).await;
    assert_eq!((sample(&m, &series("success")), sample(&m, &series("repeated"))), (1.0, 60.0));
    // A later send's receipt is relayed after any repeat would have been: two webhooks in all.
    receipts(&gw, BETA_STATUS, (&marker, "13900139001"), 1).await;
    wait_for_sample(&gw, r#"smsgate_webhook_deliveries_total{tenant="beta",result="ok"}"#, 2.0).await;
    assert_eq!(answering.seen(), 2, "one webhook per send");
}

/// The same by another door: replicas sharing Redis. A receipt Tencent posts to one replica and again to
/// the other is relayed once (the mark lives in Redis beside the send it names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_repeated_across_replicas_relays_one_webhook() {
    let Some(redis) = crate::common::redis_server::RedisServer::start() else { return };
    let mock = MockTencent::start(SECRET_KEY).await;
    let answering = Receiver::start(true).await;
    let endpoint = mock.endpoint();
    let top = format!("limits_backend: {{ kind: redis, url: \"{}\", timeout: 2s, key: {STORAGE_KEY} }}", redis.url());
    let config = yaml_with("", &top, (&endpoint, "", ""), (&endpoint, "", &answering.webhook()));
    let now = chrono::Utc::now().timestamp();
    let (a, b) =
        (TestGateway::start_at(compile(&config), now).await, TestGateway::start_at(compile(&config), now).await);
    let serial =
        send(&a, OTHER_TOKEN, "+8613900139000").await.json["upstream"]["serial_no"].as_str().unwrap().to_owned();
    a.gateway.services().feedback.settled().await;

    let series =
        |status: &str| format!(r#"smsgate_delivery_reports_total{{tenant="beta",country="CN",status="{status}"}}"#);
    let m = receipts(&a, BETA_STATUS, (&serial, "13900139000"), 2).await;
    assert_eq!((sample(&m, &series("success")), sample(&m, &series("repeated"))), (1.0, 1.0));
    let m = receipts(&b, BETA_STATUS, (&serial, "13900139000"), 1).await;
    assert_eq!((sample(&m, &series("success")), sample(&m, &series("repeated"))), (0.0, 1.0), "B: a repeat");
    wait_for_sample(&a, r#"smsgate_webhook_deliveries_total{tenant="beta",result="ok"}"#, 1.0).await;
    let m = metrics(&b).await;
    assert_eq!(sample(&m, r#"smsgate_webhook_deliveries_total{tenant="beta",result="ok"}"#), 0.0);
}
