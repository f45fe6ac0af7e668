//! The Redis clients of a configuration: one for commands, one for pub/sub.

use std::time::Duration;

use fred::prelude::*;

use super::StoreError;
use crate::config::RedisStore;

/// A command client and a subscriber client for `settings`, not connected yet. Both
/// reconnect by themselves (unbounded attempts, 100 ms doubling to 2 s); the subscriber
/// subscribes again after a reconnect.
pub(super) fn clients(
    settings: &RedisStore,
) -> Result<(Client, fred::clients::SubscriberClient), StoreError> {
    let config = Config::from_url(settings.url.expose())?;
    let mut builder = Builder::from_config(config);
    builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    let timeout = settings.timeout;
    builder.with_performance_config(|c| c.default_command_timeout = timeout);
    builder.with_connection_config(|c| {
        c.connection_timeout = timeout.max(Duration::from_millis(500));
        c.internal_command_timeout = timeout.max(Duration::from_millis(500));
    });
    Ok((builder.build()?, builder.build_subscriber_client()?))
}
