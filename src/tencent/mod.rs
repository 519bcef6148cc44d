//! Upstream stage for Tencent Cloud SMS (`SendSms`, API 2021-01-11): wire types, the pure TC3 signer, the
//! HTTP client and the classification of Tencent's answers. Another provider would be a sibling module.

pub mod api;
pub mod breaker;
pub mod classify;
pub mod client;
pub mod proxy;
pub mod report;
pub mod sign;

pub use client::{AccountState, OutboundSms, PreparedRequest, TencentClient};
