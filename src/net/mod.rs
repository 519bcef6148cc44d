//! Outbound HTTP shared by every provider and the webhook relay: dialing directly or through a proxy, trust
//! roots, the answer-size-bounded client and the typed "was the request written" outcome ([`proxy`]), and
//! per-endpoint circuit breakers ([`breaker`]). Nothing here knows a provider's API.

pub(crate) mod breaker;
pub(crate) mod proxy;
pub(crate) mod transport;
