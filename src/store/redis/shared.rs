//! What the request path asks Redis directly: rate-limit buckets and replay memory. Each
//! call is one round trip, bounded by `store.timeout`; the caller decides what a failure
//! means (rate limits fall back to this replica's buckets, replay memory refuses).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind};
use fred::types::ExpireOptions;

use std::collections::HashMap;

use super::unix_now;
use crate::config::LimitSpec;
use crate::metrics::Metrics;
use crate::store::sessions::SessionRecord;

/// Takes one request from a GCRA bucket, atomically and on Redis's clock (replicas' clocks
/// need not agree). KEYS[1]: the bucket (its theoretical arrival time, µs). ARGV: emission
/// interval and burst capacity, µs. Returns 0 when taken, else µs to wait.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local after = tat + interval
local wait = after - now - capacity
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000))
return 0
";

/// Redis as the request path uses it.
pub struct SharedStore {
    client: Client,
    prefix: String,
    take: Script,
    metrics: Arc<Metrics>,
}

/// A Lua script sent by its SHA-1, and in full once per server that does not know it yet.
struct Script {
    text: &'static str,
    sha1: String,
}

impl Script {
    fn new(text: &'static str) -> Script {
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
        let sha1 = hex(digest.as_ref());
        Script { text, sha1 }
    }

    async fn run(&self, client: &Client, key: String, args: Vec<i64>) -> Result<i64, Error> {
        match client
            .evalsha(self.sha1.as_str(), key.as_str(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                client.eval(self.text, key.as_str(), args).await
            }
            answer => answer,
        }
    }
}

impl SharedStore {
    pub(super) fn new(client: Client, prefix: &str, metrics: Arc<Metrics>) -> SharedStore {
        SharedStore {
            client,
            prefix: prefix.to_string(),
            take: Script::new(TAKE),
            metrics,
        }
    }

    /// Connected now: asking is worth it (while it is not, callers skip the wait).
    pub fn is_up(&self) -> bool {
        self.client.is_connected()
    }

    /// Takes one request from the shared bucket `key` of the limit `bucket`:
    /// `Ok(Err(retry after))` when it is empty, `Err` when Redis did not answer.
    pub async fn take(
        &self,
        bucket: &str,
        spec: &LimitSpec,
        key: u64,
    ) -> Result<Result<(), Duration>, Error> {
        let interval = (spec.per.as_micros() / u128::from(spec.rate.get())).max(1);
        let capacity = interval.saturating_mul(u128::from(spec.burst.get()));
        let args = [interval, capacity]
            .map(|us| i64::try_from(us).unwrap_or(i64::MAX))
            .to_vec();
        let redis_key = format!("{}rl:{bucket}:{key:016x}", self.prefix);
        let wait = self
            .timed("rate-limit", self.take.run(&self.client, redis_key, args))
            .await?;
        Ok(match u64::try_from(wait) {
            Ok(0) | Err(_) => Ok(()),
            Ok(us) => Err(Duration::from_micros(us)),
        })
    }

    /// Records `id` (of `kind`, e.g. `saml-assertion`) until `until` (unix seconds):
    /// `Ok(false)` when some replica recorded it before (a replay).
    pub async fn first_use(&self, kind: &str, id: &str, until: u64) -> Result<bool, Error> {
        // Ids are chosen by the sender: hashed, they cannot make a key long or odd.
        let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
        let key = format!("{}seen:{kind}:{}", self.prefix, hex(&digest.as_ref()[..16]));
        let until = i64::try_from(until.max(unix_now() + 1)).unwrap_or(i64::MAX);
        let set: Option<String> = self
            .timed(
                "replay",
                self.client.set(
                    key,
                    1,
                    Some(Expiration::EXAT(until)),
                    Some(SetOptions::NX),
                    false,
                ),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Claims the one-at-a-time work `name` for `ttl` (its lock expires if the holder dies):
    /// true for the one replica that gets it.
    pub async fn claim(&self, name: &str, ttl: Duration) -> Result<bool, Error> {
        let key = format!("{}flight:{name}:lock", self.prefix);
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let set: Option<String> = self
            .timed(
                "claim",
                self.client.set(
                    key,
                    1,
                    Some(Expiration::PX(ttl)),
                    Some(SetOptions::NX),
                    false,
                ),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Whether `name` is still claimed by someone.
    pub async fn claimed(&self, name: &str) -> Result<bool, Error> {
        let key = format!("{}flight:{name}:lock", self.prefix);
        let n: i64 = self.timed("claim", self.client.exists(key)).await?;
        Ok(n > 0)
    }

    /// Publishes the outcome of `name` for `ttl` (none: nothing to share), and lets go of
    /// its claim.
    pub async fn finish(
        &self,
        name: &str,
        outcome: Option<&str>,
        ttl: Duration,
    ) -> Result<(), Error> {
        if let Some(outcome) = outcome {
            let key = format!("{}flight:{name}:result", self.prefix);
            let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
            let set =
                self.client
                    .set::<(), _, _>(key, outcome, Some(Expiration::EX(ttl)), None, false);
            self.timed("flight-result", set).await?;
        }
        let lock = format!("{}flight:{name}:lock", self.prefix);
        let _: i64 = self.timed("claim", self.client.del(lock)).await?;
        Ok(())
    }

    /// The published outcome of `name`, if any yet.
    pub async fn outcome(&self, name: &str) -> Result<Option<String>, Error> {
        let key = format!("{}flight:{name}:result", self.prefix);
        self.timed("flight-result", self.client.get(key)).await
    }

    /// Files `record` in the sorted sets `indexes` and keeps it in a hash; each set expires
    /// with its last session. The commands go out together (fred pipelines what is sent
    /// concurrently), each to its node in a Cluster.
    pub async fn index_session(
        &self,
        indexes: &[String],
        record: &SessionRecord,
    ) -> Result<(), Error> {
        let until = i64::try_from(record.expires_at).unwrap_or(i64::MAX);
        let sid = record.sid.as_str();
        let hash = self.session_key(sid);
        let fields = vec![
            ("user_id", record.user_id.clone()),
            ("entity", record.entity.clone().unwrap_or_default()),
            ("idp", record.idp.clone()),
            ("issued_at", record.issued_at.to_string()),
            ("expires_at", record.expires_at.to_string()),
            ("last_seen", record.last_seen.to_string()),
        ];
        let client = &self.client;
        let keep = async move {
            let () = client.hset(hash.as_str(), fields).await?;
            let _: bool = client.expire_at(hash.as_str(), until, None).await?;
            Ok::<(), Error>(())
        };
        let mut commands = Vec::new();
        for index in indexes {
            let key = format!("{}sessions:{index}", self.prefix);
            commands.push(async move {
                let score = record.expires_at as f64;
                let () = client
                    .zadd(key.as_str(), None, None, false, false, (score, sid))
                    .await?;
                // NX gives a new set its expiry, GT pushes it out; neither shortens it.
                let (_, _): (bool, bool) = futures_util::try_join!(
                    client.expire_at(key.as_str(), until, Some(ExpireOptions::NX)),
                    client.expire_at(key.as_str(), until, Some(ExpireOptions::GT)),
                )?;
                Ok::<(), Error>(())
            });
        }
        let all =
            futures_util::future::try_join(keep, futures_util::future::try_join_all(commands));
        self.timed("session-index", all).await.map(drop)
    }

    /// Notes the last request of session `sid` (only while its hash exists).
    pub async fn touch_session(&self, sid: &str, now: u64) -> Result<(), Error> {
        let hash = self.session_key(sid);
        let touch = self.client.eval::<i64, _, _, _>(
            "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'last_seen', ARGV[1]) end return 0",
            hash,
            now.to_string(),
        );
        self.timed("session-index", touch).await.map(drop)
    }

    /// Removes session `sid` from the sorted sets `indexes`, and its hash.
    pub async fn unindex_session(&self, indexes: &[String], sid: &str) -> Result<(), Error> {
        let removals = indexes.iter().map(|index| {
            let key = format!("{}sessions:{index}", self.prefix);
            self.client.zrem::<i64, _, _>(key, sid)
        });
        let all = futures_util::future::try_join(
            self.client.del::<i64, _>(self.session_key(sid)),
            futures_util::future::try_join_all(removals),
        );
        self.timed("session-index", all).await.map(drop)
    }

    /// The sessions filed under `index` that are live at `now`.
    pub async fn indexed_sessions(
        &self,
        index: &str,
        now: u64,
    ) -> Result<Vec<SessionRecord>, Error> {
        let key = format!("{}sessions:{index}", self.prefix);
        let live: Vec<String> = self
            .timed(
                "session-index",
                self.client.zrangebyscore(
                    key.as_str(),
                    ZRange {
                        kind: ZRangeKind::Exclusive,
                        range: ZRangeBound::Score(now as f64),
                    },
                    ZRange {
                        kind: ZRangeKind::Inclusive,
                        range: ZRangeBound::InfiniteScore,
                    },
                    false,
                    None,
                ),
            )
            .await?;
        let reads = live.iter().map(|sid| {
            self.client
                .hgetall::<HashMap<String, String>, _>(self.session_key(sid))
        });
        let hashes = self
            .timed("session-index", futures_util::future::try_join_all(reads))
            .await?;
        Ok(live
            .into_iter()
            .zip(hashes)
            .filter_map(|(sid, fields)| record_of(sid, &fields))
            .collect())
    }

    fn session_key(&self, sid: &str) -> String {
        format!("{}session:{sid}", self.prefix)
    }

    /// Runs `op`, recording its latency and failure under `name`.
    async fn timed<T>(
        &self,
        name: &str,
        op: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let result = op.await;
        self.metrics
            .store_latency
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.metrics.store_errors.with_label_values(&[name]).inc();
            tracing::debug!(op = name, error = %e, "redis store");
        }
        result
    }
}

/// Lower-case hex (`audit::hex` sits above the store in the layers).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A session record from its hash; `None` when a field is missing (it expired meanwhile).
fn record_of(sid: String, fields: &HashMap<String, String>) -> Option<SessionRecord> {
    let number = |name: &str| fields.get(name)?.parse::<u64>().ok();
    Some(SessionRecord {
        user_id: fields.get("user_id")?.clone(),
        entity: fields.get("entity").filter(|e| !e.is_empty()).cloned(),
        idp: fields.get("idp")?.clone(),
        issued_at: number("issued_at")?,
        expires_at: number("expires_at")?,
        last_seen: number("last_seen")?,
        sid,
    })
}
