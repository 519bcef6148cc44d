//! smsgate: a declarative SMS gateway in front of SMS providers (Tencent Cloud SMS today).
//!
//! One request flows left to right through one module per stage:
//!
//! ```text
//! door ──────> normalize ──> script ──> template ──> policy ──> provider ───> answer
//! (server::    (phone)       (script)   (config)     (policy,   (providers)   (server::doors)
//!  doors)                                             dedupe)
//! ```
//!
//! The modules sit in layers, each importing only from its own and lower ones (the table and its check are
//! in tests/layers.rs): vocabulary (`sms`, `error`, `phone`, `clock`...) < data (`config`, inert) < infra
//! (`net`, `lanes`) < components (`script`, `policy`, `dedupe`, `protection`, `feedback`, `relay`,
//! `providers`) < assembly (`runtime`, `pipeline`) < edges (`server` and its doors, `explain`, `metrics`).
//!
//! [`config::Config`] is the compiled, validated `gateway.yaml`, inert; [`runtime::Runtime`] is built from it
//! (compiled Lua hooks, body-reading slots, provider state); [`server::Gateway`] serves a runtime on any
//! listener and swaps it whole on reload; [`pipeline::Services`] runs the stages and sends through
//! [`providers::Providers`].

pub mod clock;
pub mod config;
pub(crate) mod dedupe;
pub mod error;
pub mod explain;
pub mod feedback;
pub(crate) mod files;
pub(crate) mod json;
pub(crate) mod lanes;
pub mod logfields;
pub(crate) mod metrics;
pub(crate) mod net;
pub mod phone;
pub mod pipeline;
pub mod policy;
pub(crate) mod protection;
pub mod providers;
pub(crate) mod relay;
pub mod runtime;
pub mod script;
pub mod server;
pub mod sms;

pub use config::Config;
pub use error::GatewayError;
pub use runtime::Runtime;
pub use server::Gateway;

/// The commit this build is from (`build.rs`: `SMSGATE_COMMIT`, else `git rev-parse`), or `unknown`.
pub const COMMIT: &str = env!("SMSGATE_COMMIT");
/// `0.1.0 (commit 1a2b3c4d5e6f)`, as `smsgate --version` prints it.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SMSGATE_COMMIT"), ")");
