//! Redis deployment shapes: standalone, Sentinel, Cluster. Parsed once from `store.url` at
//! config load (`config::validate`), carried by `RedisConf::topology`, and consumed by the
//! fragment store's tracker (background) to find which servers to track and where data
//! commands go. A leaf module: it depends on nothing else in the crate.
//!
//! URL forms:
//! - `redis://[user:pass@]host:port[/db]`, `rediss://…` (TLS), `redis+unix://…`, `unix://…`
//! - `redis+sentinel://[user:pass@]s1:26379,s2:26379/<master name>[/db]` (`rediss+sentinel` for
//!   TLS to the master; the sentinels themselves are asked over plain TCP without auth)
//! - `redis+cluster://[user:pass@]n1:6379,n2:6379` (`rediss+cluster` for TLS): seed nodes

use std::fmt;

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server.
    Standalone { url: String },
    /// Primary found through Sentinel.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        /// `scheme://[auth@]` prefix for the primary's URL.
        scheme_auth: String,
        /// `/db` suffix (may be empty).
        db: String,
    },
    /// Redis Cluster; data through the cluster client, tracking on every primary.
    Cluster { nodes: Vec<String>, scheme_auth: String },
}

impl fmt::Debug for Topology {
    // URLs may carry a password: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Standalone { .. } => f.write_str("Standalone"),
            Topology::Sentinel { master, sentinels, .. } => {
                write!(f, "Sentinel(master={master}, {} sentinels)", sentinels.len())
            }
            Topology::Cluster { nodes, .. } => write!(f, "Cluster({} seed nodes)", nodes.len()),
        }
    }
}

/// Split `scheme://[auth@]hosts[/rest]`.
fn split(url: &str) -> Option<(&str, &str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (a, r),
        None => ("", rest),
    };
    let (hosts, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    Some((scheme, auth, hosts, path))
}

fn scheme_auth(tls: bool, auth: &str) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    if auth.is_empty() {
        format!("{scheme}://")
    } else {
        format!("{scheme}://{auth}@")
    }
}

fn host_list(hosts: &str, what: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() || list.iter().any(|h| !h.contains(':')) {
        return Err(format!("list the {what} as host:port[,host:port…]"));
    }
    Ok(list)
}

impl Topology {
    /// Parse `store.url`.
    pub fn parse(url: &str) -> Result<Topology, String> {
        let Some((scheme, auth, hosts, path)) = split(url) else {
            return Err("not a URL".into());
        };
        match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => Ok(Topology::Standalone { url: url.to_string() }),
            "redis+sentinel" | "rediss+sentinel" => {
                let sentinels = host_list(hosts, "sentinels")?;
                let mut parts = path.trim_start_matches('/').split('/');
                let master = parts
                    .next()
                    .filter(|m| !m.is_empty())
                    .ok_or("name the master: redis+sentinel://s1:26379,s2:26379/<master name>[/db]")?;
                let db = match parts.next() {
                    Some(d) if d.parse::<u16>().is_ok() => format!("/{d}"),
                    Some(d) => return Err(format!("{d:?} is not a database number")),
                    None => String::new(),
                };
                Ok(Topology::Sentinel {
                    sentinels: sentinels.into_iter().map(|h| format!("redis://{h}")).collect(),
                    master: master.to_string(),
                    scheme_auth: scheme_auth(scheme.starts_with("rediss"), auth),
                    db,
                })
            }
            "redis+cluster" | "rediss+cluster" => {
                if !matches!(path, "" | "/" | "/0") {
                    return Err("Redis Cluster has only database 0; drop the /db part".into());
                }
                let sa = scheme_auth(scheme.starts_with("rediss"), auth);
                Ok(Topology::Cluster {
                    nodes: host_list(hosts, "cluster nodes")?
                        .into_iter()
                        .map(|h| format!("{sa}{h}"))
                        .collect(),
                    scheme_auth: sa,
                })
            }
            other => Err(format!("unknown scheme {other:?}")),
        }
    }

    /// URL of a primary at `host:port`.
    pub fn node_url(&self, host_port: &str) -> String {
        match self {
            Topology::Standalone { url } => url.clone(),
            Topology::Sentinel { scheme_auth, db, .. } => format!("{scheme_auth}{host_port}{db}"),
            Topology::Cluster { scheme_auth, .. } => format!("{scheme_auth}{host_port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Topology::parse("redis://127.0.0.1:6379/0").unwrap(),
            Topology::Standalone {
                url: "redis://127.0.0.1:6379/0".into()
            }
        );
        let s = Topology::parse("rediss+sentinel://u:p@s1:26379,s2:26380/mymaster/2").unwrap();
        match &s {
            Topology::Sentinel { sentinels, master, .. } => {
                assert_eq!(
                    sentinels,
                    &vec!["redis://s1:26379".to_string(), "redis://s2:26380".to_string()]
                );
                assert_eq!(master, "mymaster");
            }
            _ => panic!("{s:?}"),
        }
        assert_eq!(s.node_url("10.0.0.1:6379"), "rediss://u:p@10.0.0.1:6379/2");
        assert!(!format!("{s:?}").contains("u:p"), "Debug must not show credentials");
        let c = Topology::parse("redis+cluster://n1:7000,n2:7001").unwrap();
        assert_eq!(
            c,
            Topology::Cluster {
                nodes: vec!["redis://n1:7000".into(), "redis://n2:7001".into()],
                scheme_auth: "redis://".into()
            }
        );
        assert!(Topology::parse("redis+sentinel://s1:26379").is_err());
        assert!(Topology::parse("redis+cluster://n1:7000/3").is_err());
        assert!(Topology::parse("redis+cluster://").is_err());
        assert!(Topology::parse("http://x").is_err());
    }
}
