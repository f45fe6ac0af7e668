//! Revocations and sign-in throttling shared through Redis (`store.kind: redis`).
//!
//! Every replica keeps its own [`RevokedSessions`]: a request never waits on Redis. A
//! revocation made here goes, in the background, into one sorted set (member: the revocation,
//! score: until when it matters) and out on a pub/sub channel; every replica applies what it
//! hears at once (well within a second), and reads the whole set again every few seconds and
//! after a reconnect, so nothing said while it was away is lost. A revocation that cannot be
//! written is kept and written again until Redis takes it.
//!
//! Failed and successful sign-ins travel the same way on a second channel, so a lock-out counts
//! the failures of every replica; they are not kept in Redis (a replica that starts later counts
//! from zero), and while Redis is unreachable each replica counts its own.
//!
//! Client: `fred` (reconnects with back-off by itself, and its subscriber client subscribes
//! again after a reconnect; Cluster, Sentinel and rustls TLS are built in).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind};
use tokio::sync::mpsc;

use super::{
    KillSwitches, LoginThrottle, Revocation, RevokedSessions, Switch, SwitchChange, ThrottleEvent,
    OUTBOX_CAPACITY,
};
use crate::config::{RedisServers, RedisStore};
use crate::metrics::Metrics;

mod connect;
mod shared;

pub use shared::SharedStore;

#[cfg(test)]
mod tests;

/// How often the whole set is read again (and unwritten revocations retried).
const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// Why the Redis clients cannot be made from the config.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The client refuses the servers of the config key `key`.
    #[error("{source}")]
    Servers {
        /// `store.url`, `store.cluster` or `store.sentinel`.
        key: &'static str,
        /// What the client said.
        source: fred::error::Error,
    },
    /// `store.tls.ca_file` cannot be read or holds no certificate.
    #[error("{0}")]
    CaFile(#[from] crate::pem::PemError),
    /// `store.tls.ca_file` holds a certificate that TLS cannot use as a root.
    #[error("a CA certificate of store.tls.ca_file cannot be used: {0}")]
    CaRefused(String),
    /// Without `store.tls.ca_file`, the system's roots cannot be loaded.
    #[error("the system's root certificates cannot be loaded: {0}")]
    SystemRoots(fred::error::Error),
}

impl StoreError {
    /// The config key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            StoreError::Servers { key, .. } => key,
            StoreError::CaFile(_) | StoreError::CaRefused(_) => "store.tls.ca_file",
            StoreError::SystemRoots(_) => "store.tls",
        }
    }

    /// How to fix it.
    pub fn hint(&self) -> &'static str {
        match self {
            StoreError::Servers { .. } => {
                "e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS); see store in docs/configuration.md"
            }
            StoreError::CaFile(_) | StoreError::CaRefused(_) => {
                "a PEM file of the CA certificates that Redis's certificates chain to"
            }
            StoreError::SystemRoots(_) => {
                "set store.tls.ca_file to the CA of Redis's certificates, or repair the system trust store"
            }
        }
    }
}

/// The background task that shares revocations with the other replicas.
pub struct RevocationSync {
    client: Client,
    subscriber: fred::clients::SubscriberClient,
    /// Sorted set of live revocations.
    key: String,
    /// Before every key and channel.
    key_prefix: String,
    /// Where new revocations are announced.
    channel: String,
    /// Where sign-in outcomes are announced.
    throttle_channel: String,
    revoked: Arc<RevokedSessions>,
    throttle: Arc<LoginThrottle>,
    outbox: Mutex<Option<mpsc::Receiver<Revocation>>>,
    throttle_outbox: Mutex<Option<mpsc::Receiver<ThrottleEvent>>>,
    /// Kill switches: a hash (`<prefix>switches`, field: target, value: the switch) and a
    /// channel of the same name.
    switches: Arc<KillSwitches>,
    switch_key: String,
    switch_outbox: Mutex<Option<mpsc::Receiver<SwitchChange>>>,
    /// This replica, in its announcements of sign-in outcomes: it hears its own, and a
    /// failure must count once.
    replica: u64,
    /// Behind Sentinel: the master's name and a subscriber to a Sentinel, to follow a
    /// failover at once (see `connect::failover_watch`).
    failover_watch: Option<(String, fred::clients::SubscriberClient)>,
}

/// A sign-in outcome on the channel, with the replica that saw it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Announced<E> {
    replica: u64,
    event: E,
}

impl RevocationSync {
    /// Builds the clients (no connection yet) and routes `revoked`'s revocations and
    /// `throttle`'s outcomes to them.
    pub fn new(
        settings: &RedisStore,
        revoked: Arc<RevokedSessions>,
        throttle: Arc<LoginThrottle>,
        switches: Arc<KillSwitches>,
    ) -> Result<RevocationSync, StoreError> {
        let (client, subscriber) = connect::clients(settings)?;
        let failover_watch = match &settings.servers {
            RedisServers::Sentinel { master, .. } => {
                connect::failover_watch(settings)?.map(|watch| (master.clone(), watch))
            }
            _ => None,
        };
        let (sender, receiver) = mpsc::channel(OUTBOX_CAPACITY);
        revoked.share_through(sender);
        let (sender, throttle_receiver) = mpsc::channel(OUTBOX_CAPACITY);
        throttle.share_through(sender);
        let (sender, switch_receiver) = mpsc::channel(OUTBOX_CAPACITY);
        switches.share_through(sender);
        Ok(RevocationSync {
            client,
            subscriber,
            key: format!("{}revocations", settings.key_prefix),
            key_prefix: settings.key_prefix.clone(),
            channel: format!("{}revocations", settings.key_prefix),
            throttle_channel: format!("{}sign-ins", settings.key_prefix),
            revoked,
            throttle,
            outbox: Mutex::new(Some(receiver)),
            throttle_outbox: Mutex::new(Some(throttle_receiver)),
            switches,
            switch_key: format!("{}switches", settings.key_prefix),
            switch_outbox: Mutex::new(Some(switch_receiver)),
            replica: rand::random(),
            failover_watch,
        })
    }

    /// The request path's handle on the same Redis (rate limits, replay memory).
    pub fn shared(&self, metrics: Arc<Metrics>) -> SharedStore {
        SharedStore::new(self.client.clone(), &self.key_prefix, metrics)
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(
        &self,
        metrics: Arc<Metrics>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Some(mut outbox) = self.outbox.lock().ok().and_then(|mut o| o.take()) else {
            return;
        };
        let Some(mut throttle_outbox) = self.throttle_outbox.lock().ok().and_then(|mut o| o.take())
        else {
            return;
        };
        let Some(mut switch_outbox) = self.switch_outbox.lock().ok().and_then(|mut o| o.take())
        else {
            return;
        };
        tokio::pin!(shutdown);
        // Not whole until the shared set has been read once: earlier revocations are there.
        metrics.store_up.set(0);
        // The connection tasks follow the reconnect policy from here on.
        let _client_task = self.client.connect();
        let _subscriber_task = self.subscriber.connect();
        let _resubscribe_task = self.subscriber.manage_subscriptions();
        let listener = self.listen(&metrics);
        tokio::pin!(listener);
        let failovers = self.follow_failovers();
        tokio::pin!(failovers);
        let mut unwritten: Vec<Revocation> = Vec::new();
        let mut unwritten_switches: Vec<SwitchChange> = Vec::new();
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = &mut listener => {}
                () = &mut failovers => {}
                Some(revocation) = outbox.recv() => {
                    if let Err(e) = self.write(&revocation).await {
                        count_error(&metrics, "write", &e);
                        if unwritten.len() >= OUTBOX_CAPACITY {
                            tracing::warn!("too many revocations wait for Redis; the oldest holds on its replica only");
                            unwritten.remove(0);
                        }
                        unwritten.push(revocation);
                    }
                }
                Some(change) = switch_outbox.recv() => {
                    if let Err(e) = self.write_switch(&change).await {
                        count_error(&metrics, "switch", &e);
                        unwritten_switches.push(change);
                    }
                }
                Some(event) = throttle_outbox.recv() => {
                    // Best effort: while Redis is away each replica counts its own failures.
                    if let Err(e) = self.announce(&event).await {
                        count_error(&metrics, "sign-in", &e);
                    }
                }
                _ = resync.tick() => {
                    if !self.client.is_connected() {
                        metrics.store_up.set(0);
                        continue;
                    }
                    let mut still = Vec::new();
                    for revocation in unwritten.drain(..) {
                        if let Err(e) = self.write(&revocation).await {
                            count_error(&metrics, "write", &e);
                            still.push(revocation);
                        }
                    }
                    unwritten = still;
                    let mut still = Vec::new();
                    for change in unwritten_switches.drain(..) {
                        if let Err(e) = self.write_switch(&change).await {
                            count_error(&metrics, "switch", &e);
                            still.push(change);
                        }
                    }
                    unwritten_switches = still;
                    let resynced = self.resync().await;
                    // Not yet in Redis, so not in what was read: they still hold here.
                    for change in &unwritten_switches {
                        self.switches.apply(change);
                    }
                    match resynced {
                        Ok(()) => metrics.store_up.set(1),
                        Err(e) => {
                            metrics.store_up.set(0);
                            count_error(&metrics, "resync", &e);
                        }
                    }
                }
            }
        }
        let _ = self.subscriber.quit().await;
        let _ = self.client.quit().await;
        if let Some((_, watch)) = &self.failover_watch {
            let _ = watch.quit().await;
        }
    }

    /// Behind Sentinel, reconnects both clients when the Sentinel announces a new master
    /// (`+switch-master <name> <old ip> <old port> <new ip> <new port>`): they ask the
    /// Sentinels again and reach the new master. Never returns.
    async fn follow_failovers(&self) {
        let Some((master, watch)) = &self.failover_watch else {
            return std::future::pending().await;
        };
        let mut messages = watch.message_rx();
        let _connection = watch.connect();
        let _resubscribe = watch.manage_subscriptions();
        while watch.wait_for_connect().await.is_err()
            || watch.subscribe("+switch-master").await.is_err()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        loop {
            let Ok(message) = messages.recv().await else {
                // Lagged: the next announcement will do; closed: shutting down.
                if messages.is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                continue;
            };
            let announced = message.value.as_str().unwrap_or_default().to_string();
            if announced.split(' ').next() != Some(master.as_str()) {
                continue;
            }
            tracing::info!(switch = %announced, "the Sentinels chose a new Redis master");
            let _ = self.client.force_reconnection().await;
            let _ = self.subscriber.force_reconnection().await;
        }
    }

    /// Applies every revocation announced on the channel, subscribing once connected (the
    /// subscriber subscribes again by itself after a reconnect). Never returns before the
    /// client is closed: `run` polls it in a loop.
    async fn listen(&self, metrics: &Metrics) {
        let mut messages = self.subscriber.message_rx();
        loop {
            let channels = vec![
                self.channel.clone(),
                self.throttle_channel.clone(),
                self.switch_key.clone(),
            ];
            if self.subscriber.wait_for_connect().await.is_ok()
                && self.subscriber.subscribe(channels).await.is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Subscribed: what was said before is in the set; read it now, not at the next tick.
        let connected = self.client.wait_for_connect().await;
        tracing::debug!(?connected, "subscribed to the revocation channel");
        match self.resync().await {
            Ok(()) => metrics.store_up.set(1),
            Err(e) => tracing::warn!(error = %e, "reading the shared revocations failed"),
        }
        loop {
            let message = match messages.recv().await {
                Ok(message) => message,
                // Fell behind: some announcements were missed; the set has them all.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if let Err(e) = self.resync().await {
                        tracing::warn!(error = %e, "reading the shared revocations failed");
                    }
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    // The client is gone (shutdown): nothing more will come.
                    std::future::pending::<()>().await;
                    return;
                }
            };
            let Some(text) = message.value.as_str() else {
                continue;
            };
            if &*message.channel == self.throttle_channel.as_str() {
                match serde_json::from_str::<Announced<ThrottleEvent>>(&text) {
                    Ok(heard) if heard.replica == self.replica => {}
                    Ok(heard) => self.throttle.apply(&heard.event),
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable sign-in outcome on the shared channel")
                    }
                }
                continue;
            }
            if &*message.channel == self.switch_key.as_str() {
                match serde_json::from_str::<SwitchChange>(&text) {
                    Ok(change) => self.switches.apply(&change),
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable kill switch on the shared channel")
                    }
                }
                continue;
            }
            match serde_json::from_str::<Revocation>(&text) {
                Ok(revocation) => self.revoked.apply(&revocation, unix_now()),
                Err(e) => tracing::warn!(error = %e, "unreadable revocation on the shared channel"),
            }
        }
    }

    /// Stores `revocation` until it expires and announces it.
    async fn write(&self, revocation: &Revocation) -> Result<(), Error> {
        let json = serde_json::to_string(revocation)
            .map_err(|e| Error::new(fred::error::ErrorKind::Parse, e.to_string()))?;
        let score = revocation.expires_at() as f64;
        let _: () = self
            .client
            .zadd(
                self.key.as_str(),
                None,
                None,
                false,
                false,
                (score, json.as_str()),
            )
            .await?;
        let _: () = self.client.publish(self.channel.as_str(), json).await?;
        Ok(())
    }

    /// Announces a sign-in outcome to the other replicas.
    async fn announce(&self, event: &ThrottleEvent) -> Result<(), Error> {
        let announced = Announced {
            replica: self.replica,
            event,
        };
        let json = serde_json::to_string(&announced)
            .map_err(|e| Error::new(fred::error::ErrorKind::Parse, e.to_string()))?;
        let _: () = self
            .client
            .publish(self.throttle_channel.as_str(), json)
            .await?;
        Ok(())
    }

    /// Drops what has expired, then applies every live revocation.
    async fn resync(&self) -> Result<(), Error> {
        let now = unix_now();
        let now_score = score(ZRangeBound::Score(now as f64));
        let _: () = self
            .client
            .zremrangebyscore(
                self.key.as_str(),
                score(ZRangeBound::NegInfiniteScore),
                now_score.clone(),
            )
            .await?;
        let live: Vec<String> = self
            .client
            .zrangebyscore(
                self.key.as_str(),
                now_score,
                score(ZRangeBound::InfiniteScore),
                false,
                None,
            )
            .await?;
        tracing::debug!(live = live.len(), "revocations read from the shared set");
        for text in live {
            match serde_json::from_str::<Revocation>(&text) {
                Ok(revocation) => self.revoked.apply(&revocation, now),
                Err(e) => tracing::warn!(error = %e, "unreadable revocation in the shared set"),
            }
        }
        self.resync_switches(now).await?;
        Ok(())
    }
}

impl RevocationSync {
    /// Stores a kill switch change and announces it.
    async fn write_switch(&self, change: &SwitchChange) -> Result<(), Error> {
        let json = serde_json::to_string(change)
            .map_err(|e| Error::new(fred::error::ErrorKind::Parse, e.to_string()))?;
        match change {
            SwitchChange::Off(switch) => {
                let value = serde_json::to_string(switch)
                    .map_err(|e| Error::new(fred::error::ErrorKind::Parse, e.to_string()))?;
                let field = switch.target.key();
                let () = self
                    .client
                    .hset(self.switch_key.as_str(), (field, value))
                    .await?;
            }
            SwitchChange::On(target) => {
                let _: i64 = self
                    .client
                    .hdel(self.switch_key.as_str(), target.key())
                    .await?;
            }
        }
        let _: () = self.client.publish(self.switch_key.as_str(), json).await?;
        Ok(())
    }

    /// Replaces this replica's kill switches with the shared ones; drops expired ones there.
    async fn resync_switches(&self, now: u64) -> Result<(), Error> {
        let all: HashMap<String, String> = self.client.hgetall(self.switch_key.as_str()).await?;
        let mut live = Vec::new();
        for (field, text) in all {
            match serde_json::from_str::<Switch>(&text) {
                Ok(switch) if switch.until.is_some_and(|until| until <= now) => {
                    let _: i64 = self.client.hdel(self.switch_key.as_str(), field).await?;
                }
                Ok(switch) => live.push(switch),
                Err(e) => tracing::warn!(error = %e, "unreadable kill switch in the shared set"),
            }
        }
        self.switches.replace_all(live);
        Ok(())
    }
}

/// A score bound (an integer would be read as a rank).
fn score(bound: ZRangeBound) -> ZRange {
    ZRange {
        kind: ZRangeKind::Inclusive,
        range: bound,
    }
}

fn count_error(metrics: &Metrics, op: &str, error: &Error) {
    metrics.store_errors.with_label_values(&[op]).inc();
    tracing::debug!(op, %error, "redis store");
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
