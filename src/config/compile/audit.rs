//! Compiling `audit:` (file, fsync policy, queue, checkpoint signing and cadence).

use std::time::Duration;

use super::Compiler;
use crate::config::raw::*;
use crate::config::*;

impl Compiler<'_> {
    pub(super) fn audit(&mut self, raw: RawAudit) -> Audit {
        let fsync = match raw.fsync.as_deref() {
            None | Some("interval") => FsyncPolicy::Interval(self.duration(
                "audit.fsync_interval",
                raw.fsync_interval.as_ref(),
                Duration::from_secs(1),
            )),
            Some("always") => FsyncPolicy::Always,
            Some("never") => FsyncPolicy::Never,
            Some(other) => {
                self.issues.add(
                    "audit.fsync",
                    format!("unknown policy `{other}`"),
                    "use always, interval or never",
                );
                FsyncPolicy::Always
            }
        };
        if raw.fsync_interval.is_some() && !matches!(fsync, FsyncPolicy::Interval(_)) {
            self.issues.add(
                "audit.fsync_interval",
                "only applies with fsync: interval",
                "remove it or set fsync: interval",
            );
        }
        let on_queue_full = match raw.on_queue_full.as_deref() {
            None | Some("block") => QueueFullPolicy::Block,
            Some("drop") => QueueFullPolicy::Drop,
            Some(other) => {
                self.issues.add(
                    "audit.on_queue_full",
                    format!("unknown policy `{other}`"),
                    "use block or drop",
                );
                QueueFullPolicy::Block
            }
        };
        let queue_capacity = raw.queue_capacity.unwrap_or(65_536);
        if queue_capacity == 0 {
            self.issues
                .add("audit.queue_capacity", "must be at least 1", "");
        }
        let checkpoint_every = raw.checkpoint_every.unwrap_or(1000);
        if checkpoint_every == 0 {
            self.issues
                .add("audit.checkpoint_every", "must be at least 1", "");
        }
        let signing_key = raw
            .signing_key
            .as_ref()
            .and_then(|s| self.secret("audit.signing_key", s));
        if signing_key.is_none() {
            self.warnings.push("audit.signing_key is not set: checkpoints are signed with a key made for this process only".into());
        }
        let path = raw
            .path
            .unwrap_or_else(|| "/var/log/portcullis/audit.jsonl".into());
        let rotate = raw.rotate.map(|r| self.rotation(r)).unwrap_or_default();
        let retention = raw.retention.map(|r| Retention {
            keep: r
                .keep
                .as_ref()
                .map(|k| self.duration("audit.retention.keep", Some(k), Duration::ZERO)),
            compress: r.compress.unwrap_or(false),
        });
        if let Some(Retention {
            keep: Some(keep), ..
        }) = retention
        {
            if keep < Duration::from_secs(1) {
                self.issues.add(
                    "audit.retention.keep",
                    "must be at least 1s",
                    "write how long rotated files stay, like 90d",
                );
            }
        }
        Audit {
            path: self.base_dir.join(path),
            fsync,
            queue_capacity: queue_capacity.max(1),
            on_queue_full,
            signing_key,
            checkpoint_every: checkpoint_every.max(1),
            checkpoint_interval: self.duration(
                "audit.checkpoint_interval",
                raw.checkpoint_interval.as_ref(),
                Duration::from_secs(60),
            ),
            rotate,
            retention,
        }
    }

    fn rotation(&mut self, raw: RawAuditRotate) -> Rotation {
        let max_age = raw
            .max_age
            .as_ref()
            .map(|a| self.duration("audit.rotate.max_age", Some(a), Duration::ZERO));
        if max_age.is_some_and(|age| age < Duration::from_secs(1)) {
            self.issues.add(
                "audit.rotate.max_age",
                "must be at least 1s",
                "write how long one file stays current, like 1d",
            );
        }
        // A file smaller than a few records would rotate on every write.
        if raw.max_size.is_some_and(|size| size < 4096) {
            self.issues.add(
                "audit.rotate.max_size",
                "must be at least 4096 bytes",
                "write a size in bytes, like 268435456 for 256 MiB",
            );
        }
        Rotation {
            max_size: raw.max_size.map(|size| size as u64),
            max_age,
        }
    }
}
