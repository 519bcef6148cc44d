//! Upstream stage for Twilio Programmable SMS (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`), the
//! pure parts: the form body and Basic credentials we send (as Logto's Twilio connector sends them, so an
//! operator's connector config carries over), the classification of Twilio's answers into the gateway's typed
//! outcome, and the checking and reading of the status callbacks Twilio posts back. No I/O here: the client
//! (egress, retries, failover) builds on these.

// Until the client lands (the routing branch), nothing outside the tests calls these: the allow goes then.
#![allow(dead_code, reason = "the Twilio client that calls these is built on another branch")]

pub(crate) mod api;
pub(crate) mod classify;
pub(crate) mod report;
pub(crate) mod sign;
