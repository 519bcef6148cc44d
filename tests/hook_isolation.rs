//! One tenant's hostile hook against everyone else, through the real path, on a one-thread runtime (as
//! `server.workers: 1` serves): its calls are first tried inline on that one worker, within a slice of
//! the budget, and once one overruns they run on the hook threads, where they hold at most its share; so
//! another tenant's plain send, hooked send and `/healthz` complete while its calls still run (proved by
//! order, not by time); past its share and queue it gets `503 script_busy`. The hook threads are one pool
//! per process: these tests run one at a time, in their own binary.

use crate::common::hooks::{self, HookTenant};
use crate::common::*;
use smsgate::script::CallPaths;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOSTILE_TOKEN: &str = "hostile-token-0000001";
const HOOKED_TOKEN: &str = "hooked-token-00000001";
const PLAIN_TOKEN: &str = "plain-token-00000001";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A hook whose calls answer at once for `fast` and otherwise spin until their deadline (1 s; the budget
/// is far larger), a tenant with an ordinary hook, a tenant without one.
fn tenants() -> Vec<HookTenant<'static>> {
    vec![
        HookTenant {
            name: "hostile",
            token: HOSTILE_TOKEN,
            script: Some(r#"function on_send(req) if req.params[1] == "fast" then return end while true do end end"#),
            extra: "    script_limits: { instructions: 100000000, time: 1s }",
        },
        HookTenant {
            name: "hooked",
            token: HOOKED_TOKEN,
            script: Some(
                r#"function on_send(req) if req.phone:sub(1, 5) == "+1900" then return {reject = "no"} end end"#,
            ),
            extra: "    script_limits: { time: 1s }",
        },
        HookTenant { name: "plain", token: PLAIN_TOKEN, script: None, extra: "" },
    ]
}

/// One thread runs the gateway and every client: a call that held it would stall them all.
fn run(test: impl std::future::Future<Output = ()>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(test);
}

/// The hostile hook is first fast, so its calls take the inline path; the first slow call then overruns
/// its slice there (and is made again on the hook threads), which sends the calls after it straight to
/// the hook threads.
async fn fast_then_slow(gw: &TestGateway) {
    for _ in 0..3 {
        let fast = hooks::send(gw, HOSTILE_TOKEN, "fast").await;
        assert_eq!(fast.status, 200, "{:#}", fast.json);
    }
    // The slice is wall-clock (200 µs): on a busy machine a fast call may be preempted past it and overrun
    // (closing the inline path for COOLDOWN); either way the inline path was tried.
    let paths = hostile_paths(gw);
    assert!(paths.inline + paths.overruns >= 1, "fast calls take the inline path: {paths:?}");
}

fn hostile_paths(gw: &TestGateway) -> CallPaths {
    let tenant = gw.gateway.runtime().tenant("hostile").unwrap().clone();
    tenant.script.as_ref().expect("a hook").call_paths()
}

/// Waits until the hostile tenant's calls hold their share of the hook threads and more wait behind.
async fn hostile_calls_running(gw: &TestGateway) {
    let tenant = gw.gateway.runtime().tenant("hostile").unwrap().clone();
    let hook = tenant.script.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let load = hook.load_now();
        if load.running >= 1 && load.waiting >= 1 {
            return;
        }
        assert!(Instant::now() < deadline, "the hostile calls never started: {load:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[test]
fn regression_one_tenants_hook_cannot_starve_other_tenants() {
    run(async {
        let (mock, gw, _dir) = hooks::gateway(&tenants()).await;
        let gw = Arc::new(gw);
        fast_then_slow(&gw).await;
        let hostile: Vec<_> = (0..8)
            .map(|_| {
                let gw = gw.clone();
                tokio::spawn(async move { hooks::send(&gw, HOSTILE_TOKEN, "x").await })
            })
            .collect();
        hostile_calls_running(&gw).await;
        assert!(hostile_paths(&gw).overruns >= 1, "a slow call tried the inline path: {:?}", hostile_paths(&gw));

        // While the hostile calls run: another tenant's hooked send, a plain send, and /healthz.
        let hooked =
            gw.post_as("/v1/sms/send", &native("+8613800138001", "SignIn", "123456"), Some(HOOKED_TOKEN)).await;
        assert_eq!(hooked.status, 200, "{:#}", hooked.json);
        let plain = gw.post_as("/v1/sms/send", &native("+8613800138002", "SignIn", "123456"), Some(PLAIN_TOKEN)).await;
        assert_eq!(plain.status, 200, "{:#}", plain.json);
        let health = gw.http.get(gw.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert!(hostile.iter().all(|h| !h.is_finished()), "every hostile call was still running or waiting");
        assert_eq!(mock.seen().len(), 5, "three fast hostile sends, then these two");

        for answer in hostile {
            let answer = answer.await.unwrap();
            assert!(matches!(answer.error_code(), "script_error" | "script_busy"), "{:#}", answer.json);
        }
        assert_eq!(mock.seen().len(), 5, "no slow hostile request was sent");
    });
}

#[test]
fn a_tenant_past_its_share_and_queue_gets_script_busy() {
    run(async {
        let (_mock, gw, _dir) = hooks::gateway(&tenants()).await;
        let gw = Arc::new(gw);
        fast_then_slow(&gw).await;
        // More calls than the lane holds (256 waiting, plus those running).
        let hostile: Vec<_> = (0..300)
            .map(|_| {
                let gw = gw.clone();
                tokio::spawn(async move { hooks::send(&gw, HOSTILE_TOKEN, "x").await })
            })
            .collect();
        hostile_calls_running(&gw).await;
        let hooked =
            gw.post_as("/v1/sms/send", &native("+8613800138001", "SignIn", "123456"), Some(HOOKED_TOKEN)).await;
        assert_eq!(hooked.status, 200, "{:#}", hooked.json);

        let mut busy = 0;
        for answer in hostile {
            let answer = answer.await.unwrap();
            match answer.error_code() {
                "script_error" => answer.assert_error(500, "script_error"),
                "script_busy" => {
                    answer.assert_error(503, "script_busy");
                    assert_eq!(answer.header("retry-after"), Some("1"));
                    busy += 1;
                }
                other => panic!("{other}: {:#}", answer.json),
            }
        }
        assert!(busy >= 1, "a full lane refuses");
        let metrics = gw.gateway.metrics().render();
        let line = format!(r#"smsgate_requests_total{{tenant="hostile",usage="SignIn",code="script_busy"}} {busy}"#);
        assert!(metrics.contains(&line), "missing {line}\n{metrics}");
    });
}
