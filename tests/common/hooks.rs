//! Gateways whose tenants run Lua hooks given as text: each tenant's script is written to a temporary
//! `scripts/<tenant>.lua`, with its own `script_limits`.

use super::mock::MockTencent;
use super::{env, Answer, TestGateway, SECRET_ID, SECRET_KEY};
use smsgate::config::Config;
use smsgate::error::GatewayError;
use smsgate::pipeline::Trail;
use smsgate::sms::{PhoneInput, SendRequest};

/// One tenant of a hook gateway.
pub(crate) struct HookTenant<'a> {
    pub name: &'a str,
    /// Bearer token (at least 16 characters).
    pub token: &'a str,
    /// The hook's source, or None for a tenant without one.
    pub script: Option<&'a str>,
    /// Tenant-level YAML lines, e.g. `    script_limits: { time: 1s }`.
    pub extra: &'a str,
}

/// The YAML of a gateway with `tenants`, scripts under `<script_dir>scripts/` (relative to the config
/// file when `script_dir` is empty), limits off and de-duplication off.
pub(crate) fn yaml(endpoint: &str, listen: &str, script_dir: &str, tenants: &[HookTenant<'_>]) -> String {
    let mut out = format!("server:\n  listen: {listen}\n  shutdown_grace: 10s\n  drain_delay: 0s\ntenants:\n");
    for t in tenants {
        out.push_str(&format!(
            r#"  {name}:
    tokens: ["{token}"]
    default_country: CN
    tencent:
      accessKeyId: {SECRET_ID}
      accessKeySecret: ${{ACME_SECRET}}
      signName: Sig
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates:
        - {{ usageType: SignIn, templateCode: "1110" }}
        - {{ usageType: Generic, templateCode: "1113" }}
      endpoint: {endpoint}
      timeout: 2s
    dedupe_window: 0s
"#,
            name = t.name,
            token = t.token,
        ));
        if t.script.is_some() {
            out.push_str(&format!("    script: {script_dir}scripts/{}.lua\n", t.name));
        }
        if !t.extra.is_empty() {
            out.push_str(t.extra);
            out.push('\n');
        }
    }
    out
}

/// Writes the scripts of `tenants` into `dir/scripts`.
pub(crate) fn write_scripts(dir: &std::path::Path, tenants: &[HookTenant<'_>]) {
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    for t in tenants {
        if let Some(source) = t.script {
            std::fs::write(dir.join(format!("scripts/{}.lua", t.name)), source).unwrap();
        }
    }
}

/// An in-process gateway serving `tenants` against a mock Tencent.
pub(crate) async fn gateway(tenants: &[HookTenant<'_>]) -> (MockTencent, TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_scripts(dir.path(), tenants);
    let mock = MockTencent::start(SECRET_KEY).await;
    let text = yaml(&mock.endpoint(), "127.0.0.1:0", "", tenants);
    let config = Config::from_yaml(&text, &dir.path().join("gateway.yaml"), &env()).unwrap_or_else(|e| panic!("{e}"));
    (mock, TestGateway::start(config).await, dir)
}

/// A native send whose first param picks what the hook does.
pub(crate) fn body(which: &str) -> String {
    serde_json::json!({"phone": "+8613800138000", "usage": "SignIn", "params": [which]}).to_string()
}

pub(crate) async fn send(gw: &TestGateway, token: &str, which: &str) -> Answer {
    gw.post_as("/v1/sms/send", &body(which), Some(token)).await
}

/// What the hook of `tenant` did with a request whose first param is `which`, as `explain` sees it:
/// the script error's detail (file, line, message), or what else came out.
pub(crate) async fn detail(gw: &TestGateway, tenant: &str, which: &str) -> Result<String, String> {
    let tenant = gw.gateway.runtime().tenant(tenant).unwrap().clone();
    let request = SendRequest {
        phone: PhoneInput::Native("+8613800138000".into()),
        usage: "SignIn".into(),
        params: vec![which.into()],
        code: None,
        ip: None,
        locale: None,
        idempotency_key: None,
        vouched: false,
    };
    let mut trail = Trail::default();
    match gw.gateway.services().plan(&tenant, request, &mut trail).await {
        Err(GatewayError::ScriptError(detail)) => Ok(detail),
        Err(other) => Err(format!("{which}: {other:?}")),
        Ok(_) => Err(format!("{which}: the hook let the request through")),
    }
}

/// Whether a script error's detail says the call was cut off by its instruction budget or its deadline.
pub(crate) fn cut_off(detail: &str) -> bool {
    detail.contains("instruction budget exhausted") || detail.contains("time limit exceeded")
}
