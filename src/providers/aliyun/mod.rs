//! Aliyun (Alibaba Cloud) SMS, Dysmsapi 2017-05-25 `SendSms`: its V3 signer, wire types, code table and
//! judge, delivery-report parsing, and the client that sends over the shared transport. The pure parts are
//! tested against what the official SDK and the documentation say.

pub(crate) mod api;
pub(crate) mod classify;
pub(crate) mod client;
pub(crate) mod report;
pub(crate) mod sign;

pub(crate) use client::AliyunClient;
