//! Connections to Redis: the data connection (`DataConn`: a reconnecting `ConnectionManager` or
//! the cluster client), plain per-node connections for tracking, Sentinel queries and scans,
//! and the TLS trust (`store.tls_ca`). Built at start-up and by the tracker on a topology
//! change; the request path only clones a `DataConn` handle.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

use super::unavailable;
use crate::config::RedisConf;
use crate::fragments::StoreError;

/// Where data commands go.
#[derive(Clone)]
pub enum DataConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for DataConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            DataConn::Single(c) => c.req_packed_command(cmd),
            DataConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            DataConn::Single(c) => c.req_packed_commands(p, offset, count),
            DataConn::Cluster(c) => c.req_packed_commands(p, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            DataConn::Single(c) => c.get_db(),
            DataConn::Cluster(c) => c.get_db(),
        }
    }
}

/// `url` with `protocol=resp3` added, for the tracking connection.
pub(super) fn resp3_url(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else if url.ends_with('/') || url.matches('/').count() > 2 {
        format!("{url}?protocol=resp3")
    } else {
        format!("{url}/?protocol=resp3")
    }
}

/// The data connection to one server (standalone, or Sentinel's primary): reconnects on its
/// own, with the configured timeouts and one retry.
pub(super) fn manager(conf: &RedisConf, url: &str) -> Result<ConnectionManager, StoreError> {
    let client = client(conf, url).map_err(|e| unavailable(format!("store.url: {e}")))?;
    let mgr_conf = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(conf.connect_timeout))
        .set_response_timeout(Some(conf.response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, mgr_conf).map_err(unavailable)
}

/// A client for `url`, trusting `store.tls_ca` for `rediss://` when configured.
pub(super) fn client(conf: &RedisConf, url: &str) -> redis::RedisResult<redis::Client> {
    match &conf.tls_ca_pem {
        Some(ca) if url.starts_with("rediss") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        _ => redis::Client::open(url),
    }
}

/// A plain multiplexed connection to one node (tracking, sentinel queries, per-node scans).
pub(super) async fn direct(
    url: &str,
    conf: &RedisConf,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<MultiplexedConnection, String> {
    let url = if push.is_some() {
        resp3_url(url)
    } else {
        url.to_string()
    };
    let client = client(conf, &url).map_err(|e| e.to_string())?;
    let mut cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(conf.connect_timeout))
        .set_response_timeout(Some(conf.heartbeat_timeout.max(conf.response_timeout)));
    if let Some(tx) = push {
        cfg = cfg.set_push_sender(tx);
    }
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::resp3_url;

    #[test]
    fn resp3_urls() {
        assert_eq!(
            resp3_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379/?protocol=resp3"
        );
        assert_eq!(
            resp3_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0?protocol=resp3"
        );
        assert_eq!(resp3_url("redis://h:1/0?x=1"), "redis://h:1/0?x=1&protocol=resp3");
    }
}
