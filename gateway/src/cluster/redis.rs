//! [`RedisStore`]: the [`ClusterStore`] on Redis (7.0 or later; Valkey works the same).
//!
//! Keys, all under `sfu:{cluster}:`:
//! - `node:{id}`: a hash with the node's registration, `PX node_ttl`, rewritten every heartbeat;
//! - `nodes`: a sorted set of node ids scored by their last heartbeat (unix ms), only to enumerate
//!   the hashes (an expired hash is a dead node whatever the score); pruned after 60 s;
//! - `room:{room}`: the Room's lease, the string `node|epoch`, `PX lease_ttl`;
//! - `epoch`: the fencing-token counter.
//!
//! A claim is one Lua script (`SET NX` semantics plus `INCR epoch`, atomic); renewal is a
//! compare-and-`PEXPIRE` script; release a compare-and-`DEL` script. The epoch counter is raised
//! to at least the current unix milliseconds on every claim, so epochs keep growing even after a
//! Redis without persistence restarts empty. Every command is bounded by `store_timeout`.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::store::{Claim, ClusterStore, NodeInfo, NodeLoad, NodeState, RoomOwner, StoreError};

/// Claim: KEYS[1] room key, KEYS[2] epoch key; ARGV[1] node, ARGV[2] ttl ms, ARGV[3] epoch floor.
/// Returns {1, epoch} when claimed, {0, "node|epoch"} when held.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local e = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if e < floor then
  redis.call('SET', KEYS[2], ARGV[3])
  e = floor
end
local v = ARGV[1] .. '|' .. string.format('%d', e)
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return {1, string.format('%d', e)}
";

/// Compare-and-renew: KEYS[1] room key; ARGV[1] expected value, ARGV[2] ttl ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Compare-and-delete: KEYS[1] room key; ARGV[1] expected value.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How long a node id stays in the `nodes` set after its last heartbeat.
const PRUNE_AFTER_MS: u64 = 60_000;

/// The Redis-backed cluster store.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl RedisStore {
    /// A store on `url` for the cluster `name`. Connects lazily (and reconnects by itself), so a
    /// Redis that is down at start is not an error here: calls fail until it answers.
    pub fn new(url: &str, name: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            conn,
            prefix: format!("sfu:{name}:"),
            timeout,
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// Runs `f` bounded by the store timeout.
    async fn bounded<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                Err(StoreError::Unavailable(e.to_string()))
            }
            Ok(Err(e)) if e.kind() == redis::ErrorKind::Io => {
                Err(StoreError::Unavailable(e.to_string()))
            }
            Ok(Err(e)) => Err(StoreError::Protocol(e.to_string())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// PING, for `--check-config`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let pong: String = self.bounded(redis::cmd("PING").query_async(&mut c)).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Protocol(format!("PING answered {pong:?}")))
        }
    }
}

fn encode(n: &NodeInfo) -> Vec<(&'static str, String)> {
    let media: Vec<String> = n.media_addrs.iter().map(ToString::to_string).collect();
    vec![
        ("id", n.id.clone()),
        ("grpc", n.grpc_endpoint.clone()),
        ("region", n.region.clone()),
        ("media", media.join(",")),
        ("state", n.state.as_str().into()),
        ("version", n.version.clone()),
        ("boot", n.boot_id.clone()),
        ("workers", n.workers.to_string()),
        ("rooms", n.load.rooms.to_string()),
        ("sessions", n.load.sessions.to_string()),
        ("recent_rooms", n.load.recent_rooms.to_string()),
        ("forwarded_pps", n.load.forwarded_pps.to_string()),
        ("loop_lag_us", n.load.loop_lag_micros.to_string()),
        ("cpu_pm", n.load.cpu_permille.to_string()),
        ("heartbeat_ms", n.heartbeat_unix_ms.to_string()),
    ]
}

fn decode(h: &HashMap<String, String>) -> Option<NodeInfo> {
    let get = |k: &str| h.get(k).map(String::as_str);
    let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
    let media = match get("media")? {
        "" => Vec::new(),
        m => m
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .ok()?,
    };
    Some(NodeInfo {
        id: get("id")?.to_string(),
        grpc_endpoint: get("grpc")?.to_string(),
        region: get("region").unwrap_or_default().to_string(),
        media_addrs: media,
        state: NodeState::parse(get("state")?)?,
        version: get("version").unwrap_or_default().to_string(),
        boot_id: get("boot").unwrap_or_default().to_string(),
        workers: u32::try_from(num("workers")?).ok()?,
        load: NodeLoad {
            rooms: u32::try_from(num("rooms")?).ok()?,
            sessions: u32::try_from(num("sessions")?).ok()?,
            recent_rooms: u32::try_from(num("recent_rooms").unwrap_or(0)).ok()?,
            forwarded_pps: num("forwarded_pps").unwrap_or(0),
            loop_lag_micros: num("loop_lag_us").unwrap_or(0),
            cpu_permille: u32::try_from(num("cpu_pm").unwrap_or(0)).ok()?,
        },
        heartbeat_unix_ms: num("heartbeat_ms").unwrap_or(0),
    })
}

#[tonic::async_trait]
impl ClusterStore for RedisStore {
    async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), StoreError> {
        let key = self.key("node", &node.id);
        let nodes = format!("{}nodes", self.prefix);
        let now = unix_ms();
        let mut p = redis::pipe();
        p.atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &encode(node))
            .ignore()
            .pexpire(&key, ms(ttl) as i64)
            .ignore()
            .zadd(&nodes, &node.id, now)
            .ignore()
            .zrembyscore(&nodes, "-inf", now.saturating_sub(PRUNE_AFTER_MS))
            .ignore();
        let mut c = self.conn.clone();
        self.bounded(p.query_async::<()>(&mut c)).await
    }

    async fn deregister(&self, node: &str) -> Result<(), StoreError> {
        let mut p = redis::pipe();
        p.atomic()
            .del(self.key("node", node))
            .ignore()
            .zrem(format!("{}nodes", self.prefix), node)
            .ignore();
        let mut c = self.conn.clone();
        self.bounded(p.query_async::<()>(&mut c)).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = self
            .bounded(
                redis::cmd("ZRANGE")
                    .arg(format!("{}nodes", self.prefix))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut c),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for id in &ids {
            p.hgetall(self.key("node", id));
        }
        let hashes: Vec<HashMap<String, String>> = self.bounded(p.query_async(&mut c)).await?;
        let mut out: Vec<NodeInfo> = hashes
            .iter()
            .filter(|h| !h.is_empty())
            .filter_map(decode)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn claim_room(&self, room: &str, node: &str, ttl: Duration) -> Result<Claim, StoreError> {
        let mut c = self.conn.clone();
        let (claimed, v): (i64, String) = self
            .bounded(
                redis::cmd("EVAL")
                    .arg(CLAIM)
                    .arg(2)
                    .arg(self.key("room", room))
                    .arg(format!("{}epoch", self.prefix))
                    .arg(node)
                    .arg(ms(ttl))
                    .arg(unix_ms())
                    .query_async(&mut c),
            )
            .await?;
        if claimed == 1 {
            let epoch = v
                .parse()
                .map_err(|_| StoreError::Protocol(format!("epoch {v:?}")))?;
            Ok(Claim::Claimed { epoch })
        } else {
            RoomOwner::parse(&v)
                .map(Claim::Owned)
                .ok_or_else(|| StoreError::Protocol(format!("lease value {v:?}")))
        }
    }

    async fn renew_rooms(
        &self,
        leases: &[(String, RoomOwner)],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for (room, owner) in leases {
            p.cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(self.key("room", room))
                .arg(owner.value())
                .arg(ms(ttl));
        }
        let mut c = self.conn.clone();
        let r: Vec<i64> = self.bounded(p.query_async(&mut c)).await?;
        Ok(r.into_iter().map(|v| v == 1).collect())
    }

    async fn release_room(&self, room: &str, owner: &RoomOwner) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let r: i64 = self
            .bounded(
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(self.key("room", room))
                    .arg(owner.value())
                    .query_async(&mut c),
            )
            .await?;
        Ok(r == 1)
    }

    async fn room_owner(&self, room: &str) -> Result<Option<RoomOwner>, StoreError> {
        let mut c = self.conn.clone();
        let v: Option<String> = self
            .bounded(
                redis::cmd("GET")
                    .arg(self.key("room", room))
                    .query_async(&mut c),
            )
            .await?;
        match v {
            None => Ok(None),
            Some(v) => RoomOwner::parse(&v)
                .map(Some)
                .ok_or_else(|| StoreError::Protocol(format!("lease value {v:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_round_trip() {
        let n = NodeInfo {
            id: "a".into(),
            grpc_endpoint: "http://127.0.0.11:50051".into(),
            region: "eu-west".into(),
            media_addrs: vec!["127.0.0.11:40000".parse().unwrap()],
            state: NodeState::Draining,
            version: "0.1.0".into(),
            boot_id: "b1".into(),
            workers: 2,
            load: NodeLoad {
                rooms: 3,
                sessions: 7,
                recent_rooms: 1,
                forwarded_pps: 0,
                loop_lag_micros: 0,
                cpu_permille: 125,
            },
            heartbeat_unix_ms: 42,
        };
        let h: HashMap<String, String> = encode(&n)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(decode(&h), Some(n));
    }
}
