//! The integration tests: one binary (as ripgrep's tests/tests.rs), one module per area, shared helpers in
//! `common`. Every module links once, so CI compiles and links this crate's tests a single time.

mod common;

mod abuse;
mod aliyun;
mod body;
mod cli;
mod config;
mod deploy;
mod doors;
mod egress;
mod failover;
mod feedback;
mod feedback_logs;
mod feedback_redis;
mod hook_isolation;
mod hostile_hooks;
mod layers;
mod limiter;
mod limits;
mod listeners;
mod logs;
mod logto_connectors;
mod metrics;
mod ops;
mod pumping;
mod pumping_defense;
mod redis;
mod redis_ha;
mod reliability;
mod routing;
mod script;
mod sdk_policy;
mod send;
mod shares;
mod supabase;
mod tencent_api;
mod twilio;
mod upstream;
