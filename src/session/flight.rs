//! One OIDC refresh across every replica (`store.kind: redis`).
//!
//! A rotating refresh token may be spent once: the second replica to spend it would get an
//! error and end the user's session. So one replica claims the refresh (a lock that expires
//! if it dies), refreshes, and publishes the outcome sealed with the session key (the Redis
//! operator never reads tokens); the others wait for that outcome and use it. While Redis is
//! disconnected each replica refreshes on its own, as a single instance does; a Redis that is
//! only slow is asked again (a refresh alone could spend a rotating token twice), and after
//! [`CLAIM`] without an answer the session keeps its tokens until its next request.

use std::future::Future;
use std::time::{Duration, Instant};

use super::SessionCodec;
use crate::idp::oidc::{OidcError, OidcTokens};
use crate::store::redis::SharedStore;

/// Longest a refresh may hold its claim; past it another replica may try.
const CLAIM: Duration = Duration::from_secs(10);
/// How long an outcome is kept for late requests that still carry the old cookie.
const KEEP: Duration = Duration::from_secs(120);
/// How often a waiting replica looks for the outcome.
const POLL: Duration = Duration::from_millis(20);
/// Purpose bound into the encryption of a published outcome.
const PURPOSE: &str = "refresh-outcome";

/// What a refresh ended in, as replicas share it.
#[derive(serde::Serialize, serde::Deserialize)]
enum Outcome {
    Refreshed(OidcTokens),
    Refused,
}

/// Runs `refresh` on one replica only, for the refresh named `key`; the others get its
/// outcome. The flag is true where `refresh` ran (it is audited there).
pub(super) async fn refresh_once_everywhere<F>(
    store: &SharedStore,
    codec: &SessionCodec,
    key: &str,
    refresh: F,
) -> (Result<OidcTokens, OidcError>, bool)
where
    F: Future<Output = Result<OidcTokens, OidcError>>,
{
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let name = crate::audit::hex(&digest.as_ref()[..16]);
    let deadline = Instant::now() + CLAIM;
    loop {
        // Redis away (not merely slow): refresh alone, as a single instance does.
        if !store.is_up() {
            return (refresh.await, true);
        }
        if Instant::now() >= deadline {
            return (Err(OidcError::Unavailable), false);
        }
        if let Ok(Some(outcome)) = published(store, codec, &name).await {
            return (outcome, false);
        }
        match store.claim(&name, CLAIM).await {
            Ok(true) => {
                // The claim may be free because a refresh just finished: refresh only once a
                // read says for sure that no outcome is there.
                match confirmed_outcome(store, codec, &name, deadline).await {
                    Ok(Some(outcome)) => {
                        let _ = store.finish(&name, None, KEEP).await;
                        return (outcome, false);
                    }
                    Ok(None) => {}
                    Err(()) => {
                        let _ = store.finish(&name, None, KEEP).await;
                        return (Err(OidcError::Unavailable), false);
                    }
                }
                let outcome = refresh.await;
                publish(store, codec, &name, &outcome).await;
                return (outcome, true);
            }
            // Slow, not away: ask again (refreshing alone could spend the token twice).
            Err(_) => tokio::time::sleep(POLL).await,
            Ok(false) => {
                // Another replica is refreshing: its outcome comes, or its claim goes.
                loop {
                    if Instant::now() >= deadline {
                        return (Err(OidcError::Unavailable), false);
                    }
                    tokio::time::sleep(POLL).await;
                    if let Ok(Some(outcome)) = published(store, codec, &name).await {
                        return (outcome, false);
                    }
                    if !store.claimed(&name).await.unwrap_or(true) {
                        break;
                    }
                }
            }
        }
    }
}

/// The published outcome, read until Redis answers (or `deadline`: `Err`).
async fn confirmed_outcome(
    store: &SharedStore,
    codec: &SessionCodec,
    name: &str,
    deadline: Instant,
) -> Result<Option<Result<OidcTokens, OidcError>>, ()> {
    loop {
        if let Ok(read) = published(store, codec, name).await {
            return Ok(read);
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The outcome another replica published; `Err` when Redis did not answer.
async fn published(
    store: &SharedStore,
    codec: &SessionCodec,
    name: &str,
) -> Result<Option<Result<OidcTokens, OidcError>>, ()> {
    let Some(sealed) = store.outcome(name).await.map_err(|_| ())? else {
        return Ok(None);
    };
    let outcome = codec
        .open(PURPOSE, &sealed)
        .and_then(|json| serde_json::from_slice::<Outcome>(&json).ok());
    Ok(match outcome {
        Some(Outcome::Refreshed(tokens)) => Some(Ok(tokens)),
        Some(Outcome::Refused) => Some(Err(OidcError::RefreshRefused)),
        // Sealed under a key this replica does not hold (mid-rotation): refresh again.
        None => None,
    })
}

/// Publishes a definite outcome; an unreachable OP is not one (the claim just goes, and
/// the next request tries again).
async fn publish(
    store: &SharedStore,
    codec: &SessionCodec,
    name: &str,
    outcome: &Result<OidcTokens, OidcError>,
) {
    let shared = match outcome {
        Ok(tokens) => Some(Outcome::Refreshed(tokens.clone())),
        Err(OidcError::Unavailable) => None,
        Err(_) => Some(Outcome::Refused),
    };
    let sealed = shared
        .and_then(|o| serde_json::to_vec(&o).ok())
        .and_then(|json| codec.seal(PURPOSE, &json).ok());
    if let Err(e) = store.finish(name, sealed.as_deref(), KEEP).await {
        tracing::warn!(error = %e, "a refresh outcome could not be shared with the other replicas");
    }
}
