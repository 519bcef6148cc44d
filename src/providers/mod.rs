//! SMS providers, one folder each. A provider owns its wire types, its signer, its client (built on the
//! shared egress of [`crate::net`]), the classification of its answers into the gateway's typed outcome,
//! and its delivery-report plumbing. Tencent Cloud SMS is the one provider today.

pub mod tencent;
