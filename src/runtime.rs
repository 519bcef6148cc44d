//! The running pieces made from a compiled config. The config is inert (values, and the files it names,
//! read); [`Runtime::build`] makes, per tenant, what serving it needs: its Lua hook compiled with its pool of
//! states and its lane on the hook threads, the slots its request bodies are read in, and what the Tencent
//! client learns of its account (the key pair in use). An error names the component it is about, at the
//! config key that states it. The gateway swaps a whole runtime on reload: runtime state lives here, built by
//! Runtime::build, dropped with it on reload (a reload starts every piece afresh).

use crate::config::{self, Config, ConfigError, ConfigErrors, Credentials, Env};
use crate::providers::States;
use crate::script::ScriptHook;
use crate::sms::ProviderId;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// A compiled config and the running pieces of its tenants.
#[derive(Debug)]
pub struct Runtime {
    config: Arc<Config>,
    /// One per tenant of `config.tenants`, at the same index.
    tenants: Vec<Arc<LiveTenant>>,
}

/// A tenant being served: its config (every field reads through, `tenant.name`) and its runtime state.
#[derive(Debug)]
pub struct LiveTenant {
    spec: Arc<config::Tenant>,
    /// The tenant's Lua hook, compiled, with its pool of states.
    pub script: Option<ScriptHook>,
    /// Slots for reading this tenant's request bodies (`server.max_body_readers`): a tenant whose callers
    /// trickle bodies slowly holds at most these, never another tenant's.
    pub body_readers: Arc<Semaphore>,
    /// What the providers' clients learn of the tenant's accounts (Tencent: the key pair it signs with first).
    pub providers: States,
}

impl std::ops::Deref for LiveTenant {
    type Target = config::Tenant;

    fn deref(&self) -> &config::Tenant {
        &self.spec
    }
}

impl LiveTenant {
    /// The tenant as configured.
    pub fn spec(&self) -> &Arc<config::Tenant> {
        &self.spec
    }
}

impl Runtime {
    /// Makes the running pieces of every tenant of `config`: compiles the Lua hooks (reporting every one
    /// that fails, at its `script:` key, as `file:line:col: tenants.<name>.script: <message>`) and makes the
    /// body-reading slots and the Tencent account states. Builds Lua states: call it on a blocking thread,
    /// never on an async worker.
    pub fn build(config: Config) -> Result<Runtime, ConfigErrors> {
        let mut errors = Vec::new();
        let mut tenants = Vec::with_capacity(config.tenants.len());
        for spec in &config.tenants {
            let script = match spec.script.as_ref().map(ScriptHook::build).transpose() {
                Ok(script) => script,
                Err(message) => {
                    errors.push(ConfigError {
                        file: config.source.clone(),
                        location: spec.script.as_ref().and_then(|s| s.location),
                        path: format!("tenants.{}.script", spec.name),
                        message,
                    });
                    None
                }
            };
            tenants.push(Arc::new(LiveTenant {
                spec: spec.clone(),
                script,
                body_readers: Arc::new(Semaphore::new(config.server.max_body_readers)),
                providers: States::default(),
            }));
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.location);
            return Err(ConfigErrors(errors));
        }
        Ok(Runtime { config: Arc::new(config), tenants })
    }

    /// [`Config::load`], then [`Runtime::build`]: every error of the file, as `smsgate check` reports them.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Runtime, ConfigErrors> {
        Config::load(path, env).and_then(Runtime::build)
    }

    /// [`Config::from_yaml`], then [`Runtime::build`].
    pub fn from_yaml(text: &str, path: &Path, env: &dyn Env) -> Result<Runtime, ConfigErrors> {
        Config::from_yaml(text, path, env).and_then(Runtime::build)
    }

    /// The compiled config this runtime serves.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The tenants, in the order of the config's.
    pub fn tenants(&self) -> &[Arc<LiveTenant>] {
        &self.tenants
    }

    pub fn tenant(&self, name: &str) -> Option<&Arc<LiveTenant>> {
        self.tenants.iter().find(|t| &*t.name == name)
    }

    /// The tenant a bearer token belongs to.
    pub fn tenant_for_token(&self, token: &str) -> Option<&Arc<LiveTenant>> {
        self.config.tokens.lookup(token).map(|index| &self.tenants[index])
    }

    /// The tenant whose `<provider>.status_secret` this is.
    pub fn tenant_for_status_secret(&self, provider: ProviderId, secret: &str) -> Option<&Arc<LiveTenant>> {
        self.config.status_secrets[provider.index()].lookup(secret).map(|index| &self.tenants[index])
    }

    /// The tenant and credentials of a Tencent-compatible API caller, by its SecretId.
    pub(crate) fn sdk_client(&self, secret_id: &str) -> Option<(&Arc<LiveTenant>, &Credentials)> {
        let &(tenant, client) = self.config.sdk_clients.get(secret_id)?;
        let tenant = &self.tenants[tenant];
        Some((tenant, &tenant.sdk_clients[client]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tenant(name: &str, script: &str) -> String {
        format!(
            "  {name}:\n    tokens: [\"token-for-{name}-000001\"]\n    tencent: {{ accessKeyId: a, accessKeySecret: b, \
             sdkAppId: \"1\", region: ap-guangzhou, dry_run: true, templates: [{{ usageType: Generic, templateCode: \"1\" }}] }}\n\
             {script}"
        )
    }

    #[test]
    fn every_script_that_does_not_compile_is_reported_at_its_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.lua"), "function on_send(req)\n  if then\nend\n").unwrap();
        std::fs::write(dir.path().join("none.lua"), "local x = 1\n").unwrap();
        let yaml = format!(
            "server:\n  max_body_readers: 3\ntenants:\n{}{}",
            tenant("a", "    script: bad.lua\n"),
            tenant("b", "    script: none.lua\n")
        );
        let file = dir.path().join("gateway.yaml");
        // The config alone compiles: the scripts are read, not compiled.
        assert!(Config::from_yaml(&yaml, &file, &HashMap::new()).unwrap().tenant("a").unwrap().script.is_some());
        let errors = Runtime::from_yaml(&yaml, &file, &HashMap::new()).unwrap_err();
        let lines: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
        let file = file.display();
        assert!(lines[0].starts_with(&format!("{file}:7:13: tenants.a.script: bad.lua:2: ")), "{lines:#?}");
        assert_eq!(
            lines[1],
            format!("{file}:11:13: tenants.b.script: none.lua: the script must define function on_send(req)")
        );
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn live_tenants_line_up_with_the_config_and_start_afresh() {
        let yaml = format!("server:\n  max_body_readers: 3\ntenants:\n{}{}", tenant("a", ""), tenant("b", ""));
        let build = || Runtime::from_yaml(&yaml, Path::new("gateway.yaml"), &HashMap::new()).unwrap();
        let runtime = build();
        let b = runtime.tenant_for_token("token-for-b-000001").unwrap();
        assert_eq!(&*b.name, "b");
        assert!(Arc::ptr_eq(b.spec(), runtime.config().tenant("b").unwrap()));
        assert!(b.script.is_none());
        assert_eq!(b.body_readers.available_permits(), 3);
        let _held = b.body_readers.clone().try_acquire_owned().unwrap();
        // Another runtime of the same config has slots of its own.
        assert_eq!(build().tenant("b").unwrap().body_readers.available_permits(), 3);
        assert_eq!(b.body_readers.available_permits(), 2);
    }
}
