//! The compiled, validated configuration: types that cannot hold a bad value. Built by `compile`, read by
//! every pipeline stage, swapped whole on reload. Inert: runtime state lives in runtime.rs, built by
//! Runtime::build, dropped with it on reload.

use super::{ScriptSpec, Secret};
pub use crate::phone::NumberType;
pub use crate::sms::ProviderId;
use phonenumber::country;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const DEFAULT_ENDPOINT: &str = "https://sms.tencentcloudapi.com";
pub(crate) const ALIYUN_ENDPOINT: &str = "https://dysmsapi.aliyuncs.com";
pub(crate) const TWILIO_ENDPOINT: &str = "https://api.twilio.com";
pub(crate) const GENERIC_USAGE: &str = "Generic";
/// The most Logto signing keys the tenant-less `/v1/logto/webhook` tries on one call: what an anonymous
/// call to it costs (HMACs of the body), whatever the number of tenants.
pub(crate) const SHARED_LOGTO_WEBHOOK_KEYS: usize = 8;
/// The usage types Logto's HTTP SMS connector sends (`type`), spelled as Logto spells them. Usage types
/// match case-insensitively and are rewritten to this spelling (or to the tenant's template spelling).
pub(crate) const LOGTO_USAGES: [&str; 9] = [
    "SignIn",
    "Register",
    "ForgotPassword",
    "Generic",
    "OrganizationInvitation",
    "UserPermissionValidation",
    "BindNewIdentifier",
    "MfaVerification",
    "BindMfa",
];
/// Sent to when a tenant does not say: the numbers that can be personal mobiles. Premium-rate, toll-free,
/// shared-cost, satellite and the like are what SMS pumping targets.
pub(crate) const DEFAULT_NUMBER_TYPES: [NumberType; 2] = [NumberType::Mobile, NumberType::FixedLineOrMobile];

#[derive(Debug)]
pub struct Config {
    /// The file this config was read from; scripts resolve relative to its folder.
    pub source: PathBuf,
    pub server: ServerSettings,
    pub limits_backend: LimitsBackend,
    pub tenants: Vec<Arc<Tenant>>,
    pub(crate) tokens: super::tokens::TokenTable,
    /// Admin API bearer tokens, as digests (the index is unused).
    pub(crate) admin_tokens: super::tokens::TokenTable,
    /// Each provider's `status_secret` digests -> tenant index (indexed by [`ProviderId::index`]).
    pub(crate) status_secrets: [super::tokens::TokenTable; 3],
    /// SecretId of an SDK client -> (tenant index, client index).
    pub(crate) sdk_clients: HashMap<String, (usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// Cap on the sends this process remembers for the feedback loop; the oldest are dropped beyond it.
    pub max_remembered_sends: usize,
    /// The request head (line and headers) must arrive within this time.
    pub header_timeout: Duration,
    /// The whole body must arrive within this time (`408 request_timeout`, connection closed).
    pub body_timeout: Duration,
    /// Bodies one tenant may have in reading at once (`503 server_busy` beyond).
    pub max_body_readers: usize,
    /// Bodies read before their caller is verified (a signature over the body: Supabase hook, Tencent API,
    /// Logto webhook), apart from every tenant's `max_body_readers`: at most this many at once per door...
    pub(crate) max_unverified_readers: usize,
    /// ... at most this many at once from one source address (an IPv6 /64), all doors together...
    pub(crate) max_unverified_per_address: usize,
    /// ... and at most this many of their bytes in memory, all doors together.
    pub max_unverified_bytes: usize,
    /// `/v1/logto/webhook` without a tenant in the path: served while at most
    /// [`SHARED_LOGTO_WEBHOOK_KEYS`] tenants have a Logto key (it tries each); off: `404`, unread.
    pub shared_logto_webhook: bool,
    /// The Tencent-compatible API's listener, when enabled.
    pub tencent_listen: Option<SocketAddr>,
    /// Threads serving requests: by default the CPUs this process may use (its affinity and cgroup quota).
    /// One runs a single-threaded runtime: no work stealing, no cross-thread wake-ups. Read at start.
    pub workers: usize,
    /// The listener of `/metrics` and `/admin/v1/...`; when set, the other listeners answer 404 there.
    pub admin_listen: Option<SocketAddr>,
    /// TLS of `listen`, `tencent_listen` and `admin_listen`. Whether a listener speaks TLS is read at start;
    /// a reload re-reads the certificates.
    pub tls: Option<ListenerTls>,
    pub tencent_tls: Option<ListenerTls>,
    pub admin_tls: Option<ListenerTls>,
    /// On SIGTERM, how long `/readyz` answers 503 (requests still served) before the listeners close.
    pub drain_delay: Duration,
}

/// The TLS of one listener: the files it was read from and the rustls config built from them.
#[derive(Clone)]
pub struct ListenerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Clients must present a certificate signed by a CA of this file (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ListenerTls {
    /// The file names only: the rustls config holds the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("client_ca_file", &self.client_ca_file)
            .finish_non_exhaustive()
    }
}

/// Where limiter state lives. Read at start: a reload that changes it is logged and takes effect on restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitsBackend {
    Memory,
    Redis {
        /// Where Redis is and how to reach it.
        connect: RedisConnect,
        on_error: OnError,
        /// Bound on one Redis call, connecting included.
        timeout: Duration,
        /// The per-deployment key numbers are hashed under in Redis keys (`limits_backend.key`).
        key: Secret,
    },
}

/// How the redis backend reaches Redis: the topology, and the CA of `rediss://` servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConnect {
    pub target: RedisTarget,
    /// PEM certificates of `tls.ca_file`, trusted for `rediss://` instead of the system's roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
}

impl RedisConnect {
    /// One node at `url`, the system's roots for `rediss://`.
    pub fn node(url: &str) -> RedisConnect {
        RedisConnect { target: RedisTarget::Node(Secret::new(url)), ca_pem: None }
    }
}

/// Where Redis is. URLs may hold a password, so they are secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `url:`, a single primary.
    Node(Secret),
    /// `cluster:`, seed nodes of a Redis Cluster; the rest of the topology is discovered.
    Cluster(Vec<Secret>),
    /// `sentinel:`, the primary named `master` as the sentinels at `nodes` report it.
    Sentinel { master: String, nodes: Vec<Secret>, username: Option<String>, password: Option<Secret> },
}

impl RedisTarget {
    /// `node`, `cluster` or `sentinel`, for logs and `explain`.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisTarget::Node(_) => "node",
            RedisTarget::Cluster(_) => "cluster",
            RedisTarget::Sentinel { .. } => "sentinel",
        }
    }
}

/// What the redis backend does while Redis is unreachable or slower than its time-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Judge with an in-process store and the same rules; switch back when Redis answers again.
    Local,
    /// Send without limits (logged at every request).
    Allow,
    /// Refuse with 503 `limiter_unavailable`.
    Deny,
}

#[derive(Debug)]
pub struct Tenant {
    pub name: Arc<str>,
    /// Country used to read native-API numbers written without `+` or `00`.
    pub default_country: Option<country::Id>,
    /// The tenant's provider accounts: at least one.
    pub tencent: Option<TencentAccount>,
    pub aliyun: Option<AliyunAccount>,
    pub twilio: Option<TwilioAccount>,
    /// Which providers take a number's send, in order (failover): the first route whose countries or
    /// prefixes match, else the last one, the default. With one provider, one default route through it.
    pub routes: Vec<Route>,
    /// The usage types the tenant's providers have templates for, for each kind of number.
    pub usages: Usages,
    pub limits: Vec<LimitRule>,
    /// The tenant's Lua hook, read; `Runtime::build` compiles it.
    pub script: Option<ScriptSpec>,
    /// E.164 digits -> configured code. Requests for these numbers are answered as sent, never sent upstream
    /// and never counted.
    pub test_numbers: HashMap<u64, String>,
    pub countries: Option<CountryRule>,
    /// E.164 prefixes (with `+`) refused outright.
    pub blocked_prefixes: Vec<String>,
    /// The number types the tenant sends to; any other is refused with `number_type_blocked`.
    pub number_types: Vec<NumberType>,
    /// Duplicate sends inside this window are answered from the first; zero turns de-duplication off.
    pub dedupe_window: Duration,
    pub spend_caps: Option<SpendCaps>,
    /// The feedback loop; None: sends are not remembered and no signal is taken or given.
    pub conversion: Option<ConversionSettings>,
    /// Adaptive SMS-pumping defense (requires `conversion`).
    pub protection: Vec<ProtectionRule>,
    /// Relay of delivery receipts and conversions (requires `conversion`).
    pub webhook: Option<WebhookTarget>,
    /// The Supabase Auth Send SMS hook, when the tenant takes it.
    pub supabase: Option<SupabaseHook>,
    /// Credentials of the tenant's callers of the Tencent-compatible API (never the real Tencent keys).
    pub sdk_clients: Vec<Credentials>,
    /// Actions other than SendSms those callers may use, forwarded re-signed with the real keys.
    pub sdk_passthrough: Vec<String>,
}

/// The Supabase Auth Send SMS hook of a tenant.
#[derive(Debug)]
pub struct SupabaseHook {
    /// Standard Webhooks signing keys (several during a rotation); a request signed by any of them passes.
    pub keys: Vec<WebhookKey>,
    /// The usage type of every hook send (the hook does not say why a code is sent).
    pub usage: String,
}

/// The bytes of a Standard Webhooks secret (`whsec_<base64>`, decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookKey(pub(crate) Vec<u8>);

impl WebhookKey {
    /// The key's bytes. Callers must not format, log or echo them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("**REDACTED**")
    }
}

/// When a verification counts as a conversion of a send, and what is done with conversions.
#[derive(Debug, Clone)]
pub struct ConversionSettings {
    /// A verification within this time after a send converts it.
    pub window: Duration,
    /// How long a send is remembered (delivery receipts are matched within it); at least `window`.
    pub remember_for: Duration,
    /// Signing key of the tenant's Logto webhook.
    pub logto_webhook_secret: Option<Secret>,
    /// `tencent.report_conversion`: forward conversions to Tencent's `ReportConversion`.
    pub report_to_tencent: bool,
}

/// What a protection rule keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtectionKey {
    Country,
    /// The first N digits of the E.164 number (see `protection::KeyOf`).
    PhonePrefix(u8),
}

/// One `protection:` rule: a key whose sends convert below `min_conversion`, or show more than `max_excess`
/// unverified sends above its own baseline, is blocked (see `crate::protection`).
#[derive(Debug, Clone)]
pub struct ProtectionRule {
    /// Stable across reloads for an unchanged rule (tenant, name, definition, conversion window).
    pub id: u64,
    pub name: String,
    pub key: ProtectionKey,
    pub window: Duration,
    pub min_sends: u32,
    pub min_conversion: f64,
    /// `min_conversion` in parts per million: judged in integers, the same way in memory and in Redis.
    pub min_conversion_ppm: u32,
    /// 0: the excess over the baseline is not judged (only `min_conversion`).
    pub max_excess: u32,
    pub block_for: Duration,
    /// Escalated blocks stop growing here (at least `block_for`).
    pub(crate) max_block_for: Duration,
    pub shadow: bool,
}

/// A Standard Webhooks receiver: URL and the signing key decoded from `whsec_<base64>`.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub url: http::Uri,
    pub key: SigningKey,
}

/// Key bytes that never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(pub Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("**REDACTED**")
    }
}

/// Which countries (ISO 3166 alpha-2, `ZZ` for numbers without one) a tenant may send to.
#[derive(Debug, Clone)]
pub enum CountryRule {
    Allow(Vec<String>),
    Deny(Vec<String>),
}

impl CountryRule {
    pub(crate) fn permits(&self, country: &str) -> bool {
        match self {
            CountryRule::Allow(list) => list.iter().any(|c| c == country),
            CountryRule::Deny(list) => !list.iter().any(|c| c == country),
        }
    }
}

/// Caps on messages and on Tencent's reported `Fee`, per day and per month. None means no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub daily: Option<u64>,
    pub monthly: Option<u64>,
    pub(crate) daily_fee: Option<u64>,
    pub(crate) monthly_fee: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct SpendCaps {
    /// Where days and months start, seconds east of UTC.
    pub(crate) utc_offset_seconds: i32,
    pub tenant: Caps,
    /// Per ISO country code.
    pub countries: HashMap<String, Caps>,
}

/// Logto's spelling of one of its usage types, matched ignoring ASCII case.
pub(crate) fn logto_usage(usage: &str) -> Option<&'static str> {
    LOGTO_USAGES.iter().copied().find(|known| known.eq_ignore_ascii_case(usage))
}

impl Tenant {
    /// Whether the tenant names this usage type in any provider's templates (not through the Generic fallback).
    pub fn names_usage(&self, usage: &str) -> bool {
        self.usages.names(usage)
    }

    /// A usage type in its one spelling: the tenant's template name or Logto's name it matches ignoring ASCII
    /// case (`register`, `REGISTER` -> `Register`), else as written. Requests, hooks and rules are all read
    /// through this, so a respelling is the same usage everywhere.
    pub(crate) fn canonical_usage<'a>(&'a self, usage: &'a str) -> &'a str {
        if self.names_usage(usage) || LOGTO_USAGES.contains(&usage) {
            return usage;
        }
        self.usages.spelling(usage).or_else(|| logto_usage(usage)).unwrap_or(usage)
    }

    /// Whether the usage type is one the tenant or Logto knows (in its canonical spelling).
    pub(crate) fn knows_usage(&self, usage: &str) -> bool {
        self.names_usage(usage) || LOGTO_USAGES.contains(&usage)
    }

    /// The usage type a send is made and judged under (template, limits, de-duplication, metrics): the
    /// canonical usage when the tenant's templates for this kind of number name it, else `Generic`, whose
    /// template the send then uses. A usage type the tenant has no template for cannot escape a rule written
    /// for `Generic`, nor be counted apart from it. The same whichever provider the send then goes to.
    pub(crate) fn judged_usage<'a>(&'a self, usage: &'a str, mainland_china: bool) -> &'a str {
        let usage = self.canonical_usage(usage);
        if self.usages.has(usage, mainland_china) {
            usage
        } else {
            GENERIC_USAGE
        }
    }

    /// Every usage type whose Tencent template (mainland or international) is `template_id`, in their
    /// canonical spelling, sorted and without repeats. A door that knows only the template (the
    /// Tencent-compatible API) is judged by the rules of all of them: a template two usages share cannot
    /// escape a rule of either.
    pub(crate) fn template_usages(&self, template_id: &str) -> Vec<&str> {
        let Some(tencent) = &self.tencent else { return Vec::new() };
        let sets = std::iter::once(&tencent.templates).chain(tencent.international_templates.as_ref());
        let mut usages: Vec<&str> =
            sets.flat_map(|set| set.iter().filter(|(_, id)| *id == template_id).map(|(usage, _)| usage)).collect();
        usages.sort_unstable();
        usages.dedup();
        usages
    }

    /// The route a number's send takes: the first whose countries or prefixes match, else the default.
    pub(crate) fn route_for(&self, country: &str, e164: &str) -> &Route {
        self.routes
            .iter()
            .find(|r| r.matches(country, e164))
            .unwrap_or_else(|| self.routes.last().expect("a compiled tenant has a default route"))
    }

    /// Provider `id`'s template for a usage type and kind of number (its own, else its `Generic`): Tencent's
    /// TemplateId, Aliyun's TemplateCode, or for Twilio the usage type whose text is sent.
    pub(crate) fn template_of(&self, id: ProviderId, usage: &str, mainland_china: bool) -> Option<&str> {
        match id {
            ProviderId::Tencent => self.tencent.as_ref()?.templates_for(mainland_china).0.resolve(usage),
            ProviderId::Aliyun => self.aliyun.as_ref()?.templates_for(mainland_china).resolve(usage),
            ProviderId::Twilio => self.twilio.as_ref()?.templates.resolved_usage(usage),
        }
    }

    /// The secrets of the tenant's provider accounts (Tencent's secret keys, Aliyun's AccessKey secret,
    /// Twilio's auth token): nothing else in the config may reuse one.
    pub(crate) fn provider_secrets(&self) -> impl Iterator<Item = &str> {
        let tencent = self.tencent.iter().flat_map(|t| t.credentials.iter().map(|c| c.secret_key.expose()));
        let aliyun = self.aliyun.iter().map(|a| a.access_key_secret.expose());
        let twilio = self.twilio.iter().map(|t| t.auth_token.expose());
        tencent.chain(aliyun).chain(twilio)
    }

    /// The providers the tenant configures, in [`ProviderId::ALL`] order.
    pub fn providers(&self) -> impl Iterator<Item = ProviderId> + '_ {
        ProviderId::ALL.into_iter().filter(|p| self.upstream(*p).is_some())
    }

    /// How provider `id`'s account is reached, when the tenant configures it.
    pub fn upstream(&self, id: ProviderId) -> Option<&Upstream> {
        match id {
            ProviderId::Tencent => self.tencent.as_ref().map(|a| &a.upstream),
            ProviderId::Aliyun => self.aliyun.as_ref().map(|a| &a.upstream),
            ProviderId::Twilio => self.twilio.as_ref().map(|a| &a.upstream),
        }
    }

    /// Whether every send of the tenant is signed and logged, never transmitted: each provider it
    /// configures is in dry run.
    pub fn dry_run(&self) -> bool {
        self.providers().all(|p| self.upstream(p).is_some_and(|u| u.dry_run))
    }

    /// The longest time a send may take: the sum of its route's deadlines (each failover gets its own).
    pub fn longest_send(&self) -> Duration {
        let per_route = |r: &Route| r.via.iter().filter_map(|p| self.upstream(*p)).map(|u| u.timeout).sum();
        self.routes.iter().map(per_route).max().unwrap_or_default()
    }
}

/// One `routes:` entry: the numbers it takes (by country or E.164 prefix; neither: the default route) and the
/// providers that send them, in order.
#[derive(Debug, Clone)]
pub struct Route {
    pub countries: Vec<String>,
    /// E.164 prefixes with `+`.
    pub prefixes: Vec<String>,
    pub via: Vec<ProviderId>,
    /// Its place in `routes:` (0-based), for `explain` and logs; `None` for the implicit single-provider route.
    pub index: Option<usize>,
}

impl Route {
    pub(crate) fn is_default(&self) -> bool {
        self.countries.is_empty() && self.prefixes.is_empty()
    }

    fn matches(&self, country: &str, e164: &str) -> bool {
        self.countries.iter().any(|c| c == country) || self.prefixes.iter().any(|p| e164.starts_with(p.as_str()))
    }
}

/// The usage types a tenant's providers have templates for, for mainland China numbers and for the others:
/// the union over its providers, so a usage is judged the same whichever provider sends it (`check` makes
/// sure every provider of a route can send every usage, with its `Generic` template at least).
#[derive(Debug, Default)]
pub struct Usages {
    pub(crate) mainland: BTreeSet<String>,
    pub(crate) international: BTreeSet<String>,
}

impl Usages {
    pub(crate) fn names(&self, usage: &str) -> bool {
        self.mainland.contains(usage) || self.international.contains(usage)
    }

    pub(crate) fn has(&self, usage: &str, mainland_china: bool) -> bool {
        if mainland_china {
            self.mainland.contains(usage)
        } else {
            self.international.contains(usage)
        }
    }

    /// The templates' own spelling of a usage type matched ignoring ASCII case.
    pub(crate) fn spelling(&self, usage: &str) -> Option<&str> {
        self.mainland.iter().chain(&self.international).find(|n| n.eq_ignore_ascii_case(usage)).map(String::as_str)
    }

    /// Every usage type named, for either kind of number.
    pub(crate) fn all(&self) -> impl Iterator<Item = &str> {
        self.mainland.union(&self.international).map(String::as_str)
    }
}

/// How a provider account is reached, the same keys for every provider (`endpoint`, `fallback_endpoints`,
/// `timeout`, `dry_run`, `max_attempts`, `retry_maybe_sent`, `proxy`, `ca_file`).
#[derive(Debug)]
pub struct Upstream {
    /// The primary endpoint first, then the fallbacks, in order.
    pub endpoints: Vec<Endpoint>,
    /// Deadline for the whole send on this provider, retries included.
    pub timeout: Duration,
    pub dry_run: bool,
    /// Attempts per send, the first included (at least 1).
    pub max_attempts: u32,
    pub retry_maybe_sent: bool,
    /// Certificates trusted besides the built-in roots (`ca_file`), for every endpoint.
    pub roots: Option<Arc<TrustRoots>>,
}

/// `aliyun:`: Logto's Aliyun SMS connector config, compiled.
#[derive(Debug)]
pub struct AliyunAccount {
    pub access_key_id: String,
    pub access_key_secret: Secret,
    pub sign_name: String,
    /// Usage type -> TemplateCode for mainland China numbers, and for the others (Logto's
    /// `{china, overseas}` form; a plain code serves both).
    pub china: Templates,
    pub overseas: Templates,
    pub upstream: Upstream,
}

impl AliyunAccount {
    pub(crate) fn templates_for(&self, mainland_china: bool) -> &Templates {
        if mainland_china {
            &self.china
        } else {
            &self.overseas
        }
    }
}

/// `twilio:`: Logto's Twilio SMS connector config, compiled.
#[derive(Debug)]
pub struct TwilioAccount {
    pub account_sid: String,
    pub auth_token: Secret,
    pub messaging_service_sid: String,
    /// `disableRiskCheck`: sent as `RiskCheck=disable`.
    pub disable_risk_check: bool,
    /// Usage type -> message text, `{{code}}` replaced by the code.
    pub templates: Templates,
    /// The `StatusCallback` URL Twilio posts delivery statuses to (`public_url` + `/v1/twilio/status/<secret>`),
    /// and against which their signature is checked.
    pub status_callback: Option<String>,
    pub upstream: Upstream,
}

#[derive(Debug)]
pub struct TencentAccount {
    /// The current key pair first, then the optional next one (rotation). Which one the client signs with
    /// first is runtime state (`tencent::AccountState`): it lives in runtime.rs, built by Runtime::build,
    /// dropped with it on reload.
    pub credentials: Vec<Credentials>,
    pub sign_name: Option<String>,
    pub sdk_app_id: String,
    pub region: String,
    /// Usage type -> TemplateId.
    pub templates: Templates,
    /// With them, `templates` serve mainland numbers (+86) only and these serve every other number.
    pub international_templates: Option<Templates>,
    pub international_sign_name: Option<String>,
    pub upstream: Upstream,
}

impl TencentAccount {
    /// The template set and sign name for a number: a number never gets a template of the wrong kind.
    pub(crate) fn templates_for(&self, mainland_china: bool) -> (&Templates, Option<&str>) {
        match &self.international_templates {
            Some(international) if !mainland_china => (international, self.international_sign_name.as_deref()),
            _ => (&self.templates, self.sign_name.as_deref()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub secret_id: String,
    pub secret_key: Secret,
}

/// Where SendSms is posted, with the `Host` value the signature covers (host, and port when not default).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: url::Url,
    /// The same address as the HTTP client takes it, parsed once.
    pub(crate) uri: http::Uri,
    pub host: String,
    /// The HTTP proxy the endpoint is reached through (`tencent.proxy`, or the proxy environment variables
    /// as they were when the config compiled); None: directly.
    pub proxy: Option<Proxy>,
    /// The way to it, its breaker's name: the URL, with ` via <proxy>` when proxied (the proxy's address,
    /// never its credentials). A tenant whose proxy fails opens its own way's breaker, not the breaker of
    /// the tenants that reach the same URL directly or through another proxy.
    pub(crate) way: String,
}

impl Endpoint {
    /// Sets the proxy the endpoint is reached through, and names the way accordingly.
    pub(crate) fn set_proxy(&mut self, proxy: Option<Proxy>) {
        self.way = match &proxy {
            Some(p) => format!("{} via {}", self.url, p.uri),
            None => self.url.to_string(),
        };
        self.proxy = proxy;
    }
}

/// An HTTP proxy in front of Tencent: a CONNECT tunnel for https endpoints, absolute-form requests for http.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `http://host:port/`, without credentials.
    pub(crate) uri: http::Uri,
    /// `Basic …`, from the user and password of the proxy URL.
    pub authorization: Option<Secret>,
    /// Where it was configured, for logs and `explain`: `tencent.proxy` or a variable's name.
    pub source: &'static str,
}

impl std::fmt::Debug for Proxy {
    // By hand: the address and where it came from, never the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("uri", &self.uri)
            .field("authorization", &self.authorization)
            .field("source", &self.source)
            .finish()
    }
}

/// Certificates the Tencent client trusts besides the built-in roots (`tencent.ca_file`): a private CA of a
/// test or staging endpoint. Read and parsed when the config compiles.
pub struct TrustRoots {
    /// The file as the config names it.
    pub path: String,
    pub certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// SHA-256 of the file: two configs naming the same roots share one connection pool.
    pub(crate) fingerprint: [u8; 32],
}

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoots").field("path", &self.path).field("certificates", &self.certificates.len()).finish()
    }
}

/// Usage type -> Tencent TemplateId. Unknown usage types resolve to `Generic` when the tenant has one.
#[derive(Debug, Default)]
pub struct Templates {
    by_usage: HashMap<String, String>,
}

impl Templates {
    pub fn insert(&mut self, usage: String, template_id: String) -> Option<String> {
        self.by_usage.insert(usage, template_id)
    }

    pub fn resolve(&self, usage: &str) -> Option<&str> {
        self.by_usage.get(usage).or_else(|| self.by_usage.get(GENERIC_USAGE)).map(String::as_str)
    }

    /// The usage type whose template `usage` resolves to: itself, or `Generic`.
    pub(crate) fn resolved_usage(&self, usage: &str) -> Option<&str> {
        self.by_usage
            .get_key_value(usage)
            .or_else(|| self.by_usage.get_key_value(GENERIC_USAGE))
            .map(|(k, _)| k.as_str())
    }

    /// The template's own spelling of a usage type matched ignoring ASCII case.
    pub fn spelling(&self, usage: &str) -> Option<&str> {
        self.by_usage.keys().find(|name| name.eq_ignore_ascii_case(usage)).map(String::as_str)
    }

    pub(crate) fn contains_id(&self, template_id: &str) -> bool {
        self.by_usage.values().any(|id| id == template_id)
    }

    /// (usage type, TemplateId) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_usage.iter().map(|(u, id)| (u.as_str(), id.as_str()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Phone,
    Tenant,
    Ip,
    Country,
    /// The first N digits of the E.164 number (without `+`).
    PhonePrefix(u8),
}

#[derive(Debug, Clone)]
pub struct LimitRule {
    /// Stable across reloads for an unchanged rule (same tenant, name and definition), so limiter state keyed
    /// by it survives a reload.
    pub id: u64,
    pub name: String,
    pub key: LimitKey,
    pub limit: NonZeroU32,
    pub per: Duration,
    /// Usage types the rule applies to, in their canonical spelling (see [`Tenant::judged_usage`]); empty
    /// means all.
    pub usages: Vec<String>,
    /// Count and report, never deny.
    pub shadow: bool,
}

impl LimitRule {
    pub(crate) fn applies_to(&self, usage: &str) -> bool {
        self.usages.is_empty() || self.usages.iter().any(|u| u == usage)
    }

    /// Whether the rule applies to a send made under `usage` that also stands for `also` (the other usages
    /// of a template they share).
    pub(crate) fn applies_to_any(&self, usage: &str, also: &[String]) -> bool {
        self.applies_to(usage) || also.iter().any(|u| self.applies_to(u))
    }
}

impl Config {
    /// The tenant a bearer token belongs to.
    pub fn tenant_for_token(&self, token: &str) -> Option<&Arc<Tenant>> {
        self.tokens.lookup(token).map(|index| &self.tenants[index])
    }

    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| &*t.name == name)
    }

    /// Whether `token` is one of `server.admin_tokens` (digest lookup, constant-time compare).
    pub(crate) fn is_admin_token(&self, token: &str) -> bool {
        self.admin_tokens.lookup(token).is_some()
    }

    /// The tenant whose `<provider>.status_secret` this is.
    pub fn tenant_for_status_secret(&self, provider: ProviderId, secret: &str) -> Option<&Arc<Tenant>> {
        self.status_secrets[provider.index()].lookup(secret).map(|index| &self.tenants[index])
    }
}
