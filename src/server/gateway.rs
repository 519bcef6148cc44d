//! The running gateway's state, shared by the server (accept loop, route table, reload, drain) and the door
//! files: the runtime in force, the services that outlive reloads, metrics, the drain flag, the denial log
//! and the budget of unverified bodies. Below both, so the doors extend the gateway without importing the
//! file that routes to them.

use super::{body, denials};
use crate::metrics::Metrics;
use crate::pipeline::Services;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A running gateway: the runtime in force and the services that outlive reloads.
#[derive(Clone)]
pub struct Gateway {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) runtime: ArcSwap<Runtime>,
    pub(super) services: Arc<Services>,
    pub(super) metrics: Metrics,
    pub(super) draining: AtomicBool,
    pub(super) denial_log: denials::DenialLog,
    /// Slots and bytes for bodies read before their caller is verified, apart from every tenant's.
    pub(super) unverified: body::Unverified,
}
