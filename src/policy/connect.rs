//! How the shared store reaches Redis, whatever its shape: one node, a Cluster (the `redis` crate's
//! cluster client: slots discovered from the seeds, `MOVED`/`ASK` followed, slots re-read after a
//! redirect) or a primary found through Sentinel (resolved again at every reconnect, so after a failover or a
//! `READONLY` answer the next connection goes to the promoted replica); `rediss://` with the configured CA.
//! One [`Connection`] type serves every caller (limits, de-duplication, spend caps, the feedback loop).

use crate::config::{RedisConnect, RedisTarget};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, TlsCertificates, TlsMode, Value};
use std::time::Duration;

/// Attempts of one call in a Cluster, the first included: enough to follow a `MOVED` and an `ASK` while a
/// slot migrates, or to wait out a `TRYAGAIN`. The call as a whole stays bounded by the store's time-out.
const CLUSTER_RETRIES: u32 = 3;

/// The configured Redis, not yet connected.
pub(crate) enum Topology {
    Node(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    /// The sentinel client keeps its connections to the sentinels between resolutions.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// A live connection, cheap to clone (every clone shares the multiplexed sockets).
#[derive(Clone)]
pub(super) enum Connection {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

fn certificates(ca_pem: &Option<Vec<u8>>) -> Option<TlsCertificates> {
    ca_pem.as_ref().map(|pem| TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) })
}

impl Topology {
    /// Builds the clients (nothing connects yet). Fails only on what `smsgate check` refuses already.
    pub(super) fn new(connect: &RedisConnect, timeout: Duration) -> RedisResult<Topology> {
        let certs = certificates(&connect.ca_pem);
        Ok(match &connect.target {
            RedisTarget::Node(url) => match certs {
                Some(certs) if url.expose().starts_with("rediss://") => {
                    Topology::Node(redis::Client::build_with_tls(url.expose(), certs)?)
                }
                _ => Topology::Node(redis::Client::open(url.expose())?),
            },
            RedisTarget::Cluster(seeds) => {
                let seeds: Vec<&str> = seeds.iter().map(|s| s.expose()).collect();
                let tls = seeds.first().is_some_and(|s| s.starts_with("rediss://"));
                let mut builder = redis::cluster::ClusterClient::builder(seeds)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(1)
                    .max_retry_wait((timeout.as_millis() as u64 / 4).max(2))
                    .retry_wait_formula(2, 2)
                    .connection_timeout(timeout)
                    .response_timeout(timeout);
                if let (true, Some(certs)) = (tls, certs) {
                    builder = builder.certs(certs);
                }
                Topology::Cluster(builder.build()?)
            }
            RedisTarget::Sentinel { master, nodes, username, password } => {
                let mut addrs = Vec::new();
                let mut sentinel_auth = None;
                for node in nodes {
                    let info = node.expose().into_connection_info()?;
                    let redis = info.redis_settings();
                    if sentinel_auth.is_none() && redis.password().is_some() {
                        sentinel_auth =
                            Some((redis.username().map(str::to_owned), redis.password().map(str::to_owned)));
                    }
                    addrs.push(info.addr().clone());
                }
                let tls = nodes.first().is_some_and(|s| s.expose().starts_with("rediss://"));
                let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?;
                if let Some((user, password)) = sentinel_auth {
                    if let Some(user) = user {
                        builder = builder.set_client_to_sentinel_username(user);
                    }
                    if let Some(password) = password {
                        builder = builder.set_client_to_sentinel_password(password);
                    }
                }
                if let Some(user) = username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = password {
                    builder = builder.set_client_to_redis_password(password.expose());
                }
                if tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if let Some(certs) = certs {
                        builder = builder
                            .set_client_to_redis_certificates(certs.clone())
                            .set_client_to_sentinel_certificates(certs);
                    }
                }
                Topology::Sentinel(tokio::sync::Mutex::new(builder.build()?))
            }
        })
    }

    /// Opens a connection: to the node; to every primary of the Cluster (after reading its slots from the
    /// first seed that answers); to the primary the sentinels name now.
    pub(super) async fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        match self {
            Topology::Node(client) => {
                Ok(Connection::Node(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Topology::Cluster(client) => Ok(Connection::Cluster(client.get_async_connection().await?)),
            Topology::Sentinel(client) => {
                let mut client = client.lock().await;
                Ok(Connection::Node(client.get_async_connection_with_config(&config).await?))
            }
        }
    }
}

impl Connection {
    /// PING the node, or every primary of the Cluster: the probe that says Redis can take writes again.
    pub(super) async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Connection::Node(c) => redis::cmd("PING").query_async::<String>(c).await.map(drop),
            Connection::Cluster(c) => {
                let routing =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded)));
                c.route_command(redis::cmd("PING"), routing).await.map(drop)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}
