//! A load script for a running gateway: fires `--requests` native sends, `--concurrency` at a time, at
//! `--numbers` distinct numbers in turn, and reports throughput, answers by status and latency percentiles.
//! Only for a gateway on this machine (loopback); the run is bounded by the request count.
//! Run: `cargo run --release --example load -- --url http://127.0.0.1:8080 --token demo-token-0123456789`.

use clap::Parser;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value = "demo-token-0123456789")]
    token: String,
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Distinct numbers, used in turn (fewer numbers than requests exercises the per-number limits).
    #[arg(long, default_value_t = 20_000)]
    numbers: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let url = url_of(&args.url);
    if !url.starts_with("http://127.") && !url.starts_with("http://localhost") && !url.starts_with("http://[::1]") {
        eprintln!("refusing {url}: this script only loads a gateway on this machine");
        std::process::exit(2);
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency as usize).build().unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (http, next, url, token) = (http.clone(), next.clone(), url.clone(), args.token.clone());
            let (requests, numbers) = (args.requests, args.numbers);
            tokio::spawn(async move {
                let mut seen: Vec<(u16, Duration)> = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return seen;
                    }
                    let phone = format!("+86139{:08}", i % numbers);
                    let body = format!(r#"{{"phone":"{phone}","usage":"SignIn","code":"123456"}}"#);
                    let sent = Instant::now();
                    let status = match http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    seen.push((status, sent.elapsed()));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    for (status, _) in &all {
        *by_status.entry(*status).or_default() += 1;
    }
    let mut latencies: Vec<Duration> = all.iter().map(|(_, d)| *d).collect();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "requests     {} in {:.2}s = {:.0}/s",
        all.len(),
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64()
    );
    println!("by status    {by_status:?} (0: no answer)");
    println!("latency      p50 {:?}  p99 {:?}  max {:?}", pct(0.5), pct(0.99), pct(1.0));
}

fn url_of(base: &str) -> String {
    format!("{}/v1/sms/send", base.trim_end_matches('/'))
}
