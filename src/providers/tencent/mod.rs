//! Upstream stage for Tencent Cloud SMS (`SendSms`, API 2021-01-11): wire types, the pure TC3 signer, the
//! HTTP client and the classification of Tencent's answers. Transport (egress, proxies, breakers) is shared,
//! in [`crate::net`].

pub mod api;
pub mod classify;
pub mod client;
pub mod report;
pub mod sign;

pub(crate) use client::{AccountState, TencentClient};
