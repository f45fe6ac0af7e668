//! Reading the last day back from the trail when a process starts, so that a restart or an
//! upgrade does not blank the console: on a thread of its own, never in the writer's way.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Activity;
use crate::audit::personal::PersonalKeys;
use crate::audit::{files, AuditEvent, EventKind, Outcome};
use crate::policy::Reason;

/// Reads the records before `first_seq` (the first this process writes) of the last day from
/// the trail at `path` into `activity`, on a thread of its own. With `personal_keys`, records
/// are read as `audit export --keys` shows them.
pub(crate) fn recall_in_background(
    path: &Path,
    personal_keys: Option<PathBuf>,
    first_seq: u64,
    activity: Activity,
) {
    let path = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("portcullis-recall".into())
        .spawn(move || {
            let now = SystemTime::now();
            let keys = personal_keys.and_then(|p| PersonalKeys::load(&p).ok());
            match recall(&path, keys.as_ref(), first_seq, now) {
                Ok(older) => activity.merge_older(&older),
                Err(e) => {
                    tracing::warn!(target: "audit", error = %e, "cannot read the last day back from the audit trail; the console counts from now")
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(target: "audit", error = %e, "cannot start reading the audit trail back");
    }
}

/// The last day before `now` of the trail at `path`, up to `first_seq` (excluded).
pub(crate) fn recall(
    path: &Path,
    keys: Option<&PersonalKeys>,
    first_seq: u64,
    now: SystemTime,
) -> std::io::Result<Activity> {
    let day_ago = now
        .checked_sub(Duration::from_secs(86_400))
        .unwrap_or(UNIX_EPOCH);
    let from = unix(day_ago);
    let older = Activity::new(unix(now));
    let mut oldest = unix(now);
    // A file rotated more than a day ago holds only older records.
    'files: for file in files::trail(path)?
        .into_iter()
        .filter(|f| f.rotated_at.is_none_or(|at| at >= day_ago))
    {
        let Ok(reader) = files::reader(&file) else {
            continue;
        };
        for line in std::io::BufRead::lines(reader) {
            let Ok(line) = line else {
                break;
            };
            let Ok(mut record) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if record["seq"].as_u64().is_some_and(|seq| seq >= first_seq) {
                // This process's own records: it counted them as it wrote them.
                break 'files;
            }
            if let Some(keys) = keys {
                keys.reveal(&mut record);
            }
            if let Some((event, seq, at)) = event_of(&record) {
                if at >= from {
                    oldest = oldest.min(at);
                    older.observe(&event, seq, at);
                }
            }
        }
    }
    older.lock().since = oldest;
    Ok(older)
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A written record as the event it was (`None` for checkpoints and unreadable lines).
pub(crate) fn event_of(record: &Value) -> Option<(AuditEvent, u64, u64)> {
    let text = |name: &str| record.get(name).and_then(Value::as_str);
    let owned = |name: &str| text(name).map(str::to_string);
    let seq = record.get("seq")?.as_u64()?;
    let at = unix(humantime::parse_rfc3339(text("ts")?).ok()?);
    let mut event = AuditEvent::new(EventKind::from_str(text("event")?).ok()?);
    event.decision = match text("decision") {
        Some("allow") => Some(Outcome::Allow),
        Some("deny") => Some(Outcome::Deny),
        _ => None,
    };
    event.reason = text("reason").and_then(|r| Reason::from_str(r).ok());
    event.user = owned("user");
    event.entity = owned("entity");
    event.idp = owned("idp");
    event.app = text("app").map(Arc::from);
    event.client_ip = text("client_ip").and_then(|ip| ip.parse().ok());
    event.method = owned("method");
    event.path = owned("path");
    event.status = record
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok());
    event.operator = owned("operator");
    event.detail = owned("detail");
    Some((event, seq, at))
}
