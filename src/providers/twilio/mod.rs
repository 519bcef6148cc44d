//! Upstream stage for Twilio Programmable SMS (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`), the
//! form body and Basic credentials we send (as Logto's Twilio connector sends them, so an
//! operator's connector config carries over), the classification of Twilio's answers into the gateway's typed
//! outcome, and the checking and reading of the status callbacks Twilio posts back. No I/O here: the client
//! (egress, retries, failover) builds on these over the shared transport.

pub(crate) mod api;
pub(crate) mod classify;
pub(crate) mod client;
pub(crate) mod report;
pub(crate) mod sign;

pub(crate) use client::TwilioClient;
