//! The connection under `CacheLayer`: one Redis (a reconnecting multiplexed
//! `ConnectionManager`), the master that Sentinel names (see `sentinel`), or a Redis
//! Cluster (redis-rs's async cluster client).
//!
//! Single commands go through `ConnectionLike` either way: the cluster client routes each
//! to the owner of its key's hash slot. What a cluster needs done differently lives here:
//! redis-rs sends a cluster pipeline to one slot only, so [`Conn::exec_pipeline`] splits
//! a pipeline by hash slot and runs the parts concurrently ([`Writes`] groups a write's
//! commands by slot as they are added); and SCAN, INFO, DBSIZE and SCRIPT LOAD must visit
//! every master ([`Conn::masters`], [`Conn::on_node`]).

use std::collections::HashMap;
use std::time::Duration;

use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{Arg, Cmd, Pipeline, RedisFuture, RedisResult, Script, Value};

use super::error::{is_state_code, server_error, Refusal};
use super::scripts;
use super::sentinel::SentinelConn;
use super::writes::CommandSink;

#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Sentinel(SentinelConn),
    Cluster(ClusterConnection),
}

/// A node to send a per-node command to: the one server, or a cluster master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Only,
    Master { host: String, port: u16 },
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Sorts the replies of a write pipeline: a refusal for Redis's state is the error of the
/// whole call; a refusal for the data is returned with its key; with `replicas`, the last
/// reply is `WAIT`'s count.
fn sort_replies(
    pipe: &Pipeline,
    mut replies: Vec<Value>,
    replicas: Option<u32>,
) -> RedisResult<Vec<Refusal>> {
    if let Some(replicas) = replicas {
        let acked: i64 = redis::from_redis_value(replies.pop().unwrap_or(Value::Nil))?;
        if acked < i64::from(replicas) {
            return Err((
                redis::ErrorKind::Io,
                "write not replicated in time",
                format!("WAIT: {acked} of {replicas} replicas acknowledged"),
            )
                .into());
        }
    }
    let mut refused = Vec::new();
    for (cmd, reply) in pipe.cmd_iter().zip(replies) {
        match reply {
            // Refused as a whole: every key it names is set aside.
            Value::ServerError(error) => {
                if is_state_code(error.code()) {
                    return Err(error.into());
                }
                let error = format!("{} {}", error.code(), error.details().unwrap_or_default());
                refused.extend(keys_of(cmd).map(|key| Refusal {
                    key: key.to_vec(),
                    error: error.clone(),
                }));
            }
            Value::Array(report) if runs(cmd, &scripts::SET_IF_NOT_OLDER) => {
                refused.extend(report_refusals(cmd, report)?);
            }
            _ => {}
        }
    }
    Ok(refused)
}

/// The keys that a [`scripts::SET_IF_NOT_OLDER`] call reports it did not write, or the
/// error of Redis's state that one of them met.
fn report_refusals(cmd: &Cmd, report: Vec<Value>) -> RedisResult<Vec<Refusal>> {
    let mut refused = Vec::new();
    let mut report = report.into_iter();
    while let (Some(position), Some(error)) = (report.next(), report.next()) {
        let position: usize = redis::from_redis_value(position)?;
        let error: String = redis::from_redis_value(error)?;
        let code = error.split_whitespace().next().unwrap_or_default();
        if is_state_code(code) {
            return Err(server_error(&error));
        }
        let key = position
            .checked_sub(1)
            .and_then(|i| keys_of(cmd).nth(i))
            .ok_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::Parse,
                    "a script reported a key it was not given",
                    format!("position {position} of {}", keys_of(cmd).count()),
                ))
            })?;
        refused.push(Refusal {
            key: key.to_vec(),
            error,
        });
    }
    Ok(refused)
}

/// The key a command of this crate acts on: its first key.
fn key_of(cmd: &Cmd) -> Option<&[u8]> {
    keys_of(cmd).next()
}

/// Every key a command of this crate acts on: those its key count names for EVAL and
/// EVALSHA, the first argument of any other command.
fn keys_of(cmd: &Cmd) -> impl Iterator<Item = &[u8]> {
    let mut args = simple_args(cmd);
    let count = match args.next() {
        Some(name)
            if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") =>
        {
            args.nth(1)
                .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
                .unwrap_or(0)
        }
        Some(_) => 1,
        None => 0,
    };
    args.take(count)
}

/// Whether `cmd` calls `script` by its hash.
fn runs(cmd: &Cmd, script: &Script) -> bool {
    let mut args = simple_args(cmd);
    args.next()
        .is_some_and(|name| name.eq_ignore_ascii_case(b"EVALSHA"))
        && args.next() == Some(script.get_hash().as_bytes())
}

fn simple_args(cmd: &Cmd) -> impl Iterator<Item = &[u8]> {
    cmd.args_iter().filter_map(|a| match a {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    })
}

/// The commands of one write, grouped as the connection sends them: one pipeline for a
/// single server, one per hash slot for a cluster. Each command is put in its place once,
/// when it is added. Every reply is read, errors included, so that a command refused for
/// its data can be told from a server that refuses everything (see [`Conn::exec_writes`]).
pub(crate) enum Writes {
    Single(Pipeline),
    Cluster(HashMap<Option<Slot>, Pipeline>),
}

impl Writes {
    /// Appends `WAIT replicas timeout` to every pipeline, so that each confirms its own
    /// writes; see [`Conn::exec_writes`].
    pub(crate) fn wait_for(&mut self, replicas: u32, timeout: Duration) {
        let timeout = timeout.as_millis() as u64;
        let parts: Vec<&mut Pipeline> = match self {
            Self::Single(pipe) => vec![pipe],
            Self::Cluster(parts) => parts.values_mut().collect(),
        };
        for pipe in parts {
            pipe.cmd("WAIT").arg(replicas).arg(timeout);
        }
    }
}

/// A pipeline that returns every reply, a server error as a value like any other.
fn replying_pipeline() -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe
}

impl CommandSink for Writes {
    fn add(&mut self, cmd: Cmd) {
        let pipe = match self {
            Self::Single(pipe) => pipe,
            Self::Cluster(parts) => parts
                .entry(key_of(&cmd).map(Slot::for_key))
                .or_insert_with(replying_pipeline),
        };
        pipe.add_command(cmd);
    }

    fn count(&self) -> usize {
        match self {
            Self::Single(pipe) => pipe.len(),
            Self::Cluster(parts) => parts.values().map(Pipeline::len).sum(),
        }
    }

    fn slot_of(&self, key: &str) -> Option<Slot> {
        match self {
            Self::Single(_) => None,
            Self::Cluster(_) => Some(Slot::for_key(key)),
        }
    }
}

impl Conn {
    /// An empty set of writes, grouped as this connection sends them.
    pub(super) fn writes(&self) -> Writes {
        match self {
            Self::Single(_) | Self::Sentinel(_) => Writes::Single(replying_pipeline()),
            Self::Cluster(_) => Writes::Cluster(HashMap::new()),
        }
    }

    /// Sends the writes, the parts of a cluster concurrently, and returns the writes that
    /// Redis refused for their data; every other command was applied.
    ///
    /// It fails, and nothing may be taken as written, when the connection fails or when
    /// any command was refused for Redis's state (`OOM`, `READONLY`, ...): the same
    /// writes succeed once that state has passed. With `replicas`, the last reply of each
    /// part is its `WAIT` (see [`Writes::wait_for`]): fewer replicas than asked is such a
    /// failure too, so the caller retries rather than acknowledge a write that a failover
    /// could lose.
    pub(crate) async fn exec_writes(
        &self,
        writes: &Writes,
        replicas: Option<u32>,
    ) -> RedisResult<Vec<Refusal>> {
        match (self, writes) {
            (Self::Single(_) | Self::Sentinel(_), Writes::Single(pipe)) => {
                sort_replies(pipe, pipe.query_async(&mut self.clone()).await?, replicas)
            }
            (Self::Cluster(conn), Writes::Cluster(parts)) => {
                let sends = parts.values().map(|part| {
                    let mut conn = conn.clone();
                    async move { sort_replies(part, part.query_async(&mut conn).await?, replicas) }
                });
                Ok(try_join_all(sends).await?.into_iter().flatten().collect())
            }
            _ => unreachable!("writes are made by the connection that sends them"),
        }
    }

    /// Runs every command of `pipe` and returns each one's reply, in order (ignored
    /// commands included). On a cluster the commands are grouped by hash slot, one
    /// pipeline per slot, sent concurrently.
    pub(crate) async fn exec_pipeline(&self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        let conn = match self {
            Self::Single(_) | Self::Sentinel(_) => {
                return pipe.query_async(&mut self.clone()).await
            }
            Self::Cluster(conn) => conn,
        };
        let mut by_slot: HashMap<Option<Slot>, (Pipeline, Vec<usize>)> = HashMap::new();
        for (i, cmd) in pipe.cmd_iter().enumerate() {
            let (part, positions) = by_slot.entry(key_of(cmd).map(Slot::for_key)).or_default();
            part.add_command(cmd.clone());
            positions.push(i);
        }
        let parts = by_slot.into_values().map(|(part, positions)| {
            let mut conn = conn.clone();
            async move {
                let replies: Vec<Value> = part.query_async(&mut conn).await?;
                Ok::<_, redis::RedisError>(positions.into_iter().zip(replies))
            }
        });
        let mut replies = vec![Value::Nil; pipe.len()];
        for part in try_join_all(parts).await? {
            for (i, reply) in part {
                replies[i] = reply;
            }
        }
        Ok(replies)
    }

    /// [`Conn::exec_pipeline`], each reply converted.
    pub(crate) async fn exec_pipeline_as<T: redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> RedisResult<Vec<T>> {
        self.exec_pipeline(pipe)
            .await?
            .into_iter()
            .map(|v| redis::from_redis_value(v).map_err(Into::into))
            .collect()
    }

    /// The nodes that hold data: the one server, or every cluster master.
    pub(super) async fn masters(&self) -> RedisResult<Vec<Node>> {
        let Self::Cluster(conn) = self else {
            return Ok(vec![Node::Only]);
        };
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn.clone())
            .await?;
        Ok(nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                    return None;
                }
                let address = fields.get(1)?.split('@').next()?;
                let (host, port) = address.rsplit_once(':')?;
                Some(Node::Master {
                    host: host.to_owned(),
                    port: port.parse().ok()?,
                })
            })
            .collect())
    }

    /// Runs a command on one node.
    pub(crate) async fn on_node<T: redis::FromRedisValue>(
        &self,
        node: &Node,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match (self, node) {
            (Self::Cluster(conn), Node::Master { host, port }) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = conn.clone().route_command(cmd.clone(), routing).await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
            _ => cmd.query_async(&mut self.clone()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_of_scripts_comes_after_the_key_count() {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc123")
            .arg(1)
            .arg("trends:keyword:rust")
            .arg("json");
        assert_eq!(key_of(&eval), Some(&b"trends:keyword:rust"[..]));
        let mut get = redis::cmd("GET");
        get.arg("users:metrics");
        assert_eq!(key_of(&get), Some(&b"users:metrics"[..]));
        assert_eq!(key_of(&redis::cmd("PING")), None);
    }

    /// A pipeline of one `SET_IF_NOT_OLDER` call over three keys.
    fn three_details() -> Pipeline {
        let mut script = scripts::SET_IF_NOT_OLDER.prepare_invoke();
        script.arg(60).arg("window_end").arg("9999");
        for key in ["trends:keyword:a", "trends:keyword:b", "trends:keyword:c"] {
            script.key(key).arg("{}").arg("");
        }
        let mut pipe = replying_pipeline();
        pipe.add_command(Cmd::invoke_script(&script));
        pipe
    }

    fn reply(resp: &str) -> Value {
        redis::parse_redis_value(resp.as_bytes()).expect("RESP")
    }

    #[test]
    fn a_script_reports_the_keys_it_did_not_write_and_only_those_are_refused() {
        let pipe = three_details();
        let keys: Vec<&[u8]> = keys_of(pipe.cmd_iter().next().unwrap()).collect();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[1], b"trends:keyword:b");

        let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
        let report = Value::Array(vec![Value::Int(2), Value::BulkString(wrongtype.into())]);
        let refused = sort_replies(&pipe, vec![report], None).unwrap();
        assert_eq!(
            refused,
            [Refusal {
                key: b"trends:keyword:b".to_vec(),
                error: wrongtype.to_owned(),
            }]
        );
        assert!(sort_replies(&pipe, vec![Value::Array(vec![])], None)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn redis_state_met_by_one_key_of_a_script_fails_the_whole_write() {
        let pipe = three_details();
        let oom = "OOM command not allowed when used memory > 'maxmemory'.";
        let report = Value::Array(vec![Value::Int(3), Value::BulkString(oom.into())]);
        let e = sort_replies(&pipe, vec![report], None).unwrap_err();
        assert_eq!(e.code(), Some("OOM"));
        assert!(crate::cache::CacheError::from(e).is_retryable());
    }

    #[test]
    fn a_script_refused_as_a_whole_refuses_every_key_it_names() {
        let pipe = three_details();
        let refused = sort_replies(&pipe, vec![reply("-ERR bad script\r\n")], None).unwrap();
        let keys: Vec<&[u8]> = refused.iter().map(|r| r.key.as_slice()).collect();
        assert_eq!(
            keys,
            [
                &b"trends:keyword:a"[..],
                b"trends:keyword:b",
                b"trends:keyword:c"
            ]
        );
        assert!(refused.iter().all(|r| r.error == "ERR bad script"));
        let e = sort_replies(&pipe, vec![reply("-READONLY replica\r\n")], None).unwrap_err();
        assert_eq!(e.code(), Some("READONLY"));
    }
}
