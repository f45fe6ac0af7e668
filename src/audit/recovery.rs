//! Where the chain goes on after a restart, and what a crash left behind.
//!
//! A process that ends cleanly seals its file with a `shutdown` checkpoint. One that was
//! killed (`kill -9`, power cut, OOM) may leave records after its last checkpoint and, if it
//! died mid-write, half a line at the end. Neither may keep the proxy down: the torn bytes are
//! moved to a sibling file (evidence, never deleted), the file is cut back to its last whole
//! line, and the first record the new process writes says so (`unclean-shutdown`, with the
//! number of unsealed records and the torn bytes' size, SHA-256 and new place), so the chain
//! goes on and `audit verify` reports the gap instead of failing on it.
//!
//! A last *whole* line that is not a sealed record is not crash damage but an edit: the start
//! is still refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::digest::{digest, SHA256};
use serde::Serialize;

use super::chain::{hex, unseal, ChainFields, GENESIS};
use super::EventKind;

/// How much of the file's end is read to find the last record (a record is a few KiB).
const TAIL_BYTES: u64 = 1 << 20;

/// Where the chain continues.
#[derive(Debug)]
pub struct ChainTail {
    /// Seq of the next record.
    pub next_seq: u64,
    /// Hash of the last record.
    pub prev: String,
    /// What the previous process left unfinished, if it did not end cleanly.
    pub unclean: Option<UncleanShutdown>,
}

/// The record written first after an unclean end (`event: unclean-shutdown`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UncleanShutdown {
    /// Always [`EventKind::UncleanShutdown`].
    pub event: EventKind,
    /// Records after the previous process's last checkpoint (now sealed by this process's
    /// next checkpoint). A lower bound when no checkpoint is within the file's last MiB.
    pub unsealed_records: u64,
    /// Bytes of a half-written last line that were moved aside (0 = none).
    pub torn_bytes: u64,
    /// SHA-256 of those bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub torn_sha256: Option<String>,
    /// Where they were moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub torn_file: Option<String>,
}

/// Reads the end of a locked audit file, repairing a torn last line; see the module docs.
pub fn recover(file: &mut File, path: &Path) -> io::Result<ChainTail> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(len - start).read_to_end(&mut tail)?;

    let whole = match tail.iter().rposition(|&b| b == b'\n') {
        Some(newline) => newline + 1,
        None if start == 0 => 0,
        None => {
            return Err(invalid(format!(
                "the last MiB of {} holds no line break: not a torn record but damage; run `portcullis audit verify` and move the file aside",
                path.display()
            )))
        }
    };
    let torn = &tail[whole..];
    let moved = if torn.is_empty() {
        None
    } else {
        let aside = set_aside(path, torn)?;
        file.set_len(start + whole as u64)?;
        file.sync_all()?;
        tracing::warn!(target: "audit", { torn.bytes = torn.len(), torn.file = %aside.display() }, "the audit file ended in a half-written line (the previous process did not end cleanly); moved it aside");
        Some((
            torn.len() as u64,
            hex(digest(&SHA256, torn).as_ref()),
            aside,
        ))
    };

    let lines: Vec<&[u8]> = tail[..whole]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let Some(last) = lines.last() else {
        // Nothing whole: a chain starts (after a torn first line, if any).
        return Ok(ChainTail {
            next_seq: 1,
            prev: GENESIS.to_string(),
            unclean: moved.map(|torn| unclean(0, Some(torn))),
        });
    };
    let (seq, hash, event) = sealed_fields(last).ok_or_else(|| {
        invalid(format!(
            "the last line of {} is not a sealed audit record; run `portcullis audit verify` and move the file aside",
            path.display()
        ))
    })?;
    let unsealed = lines
        .iter()
        .rev()
        .take_while(|line| sealed_fields(line).is_none_or(|(_, _, e)| e != "checkpoint"))
        .count() as u64;
    let ended_cleanly = event == "checkpoint" && moved.is_none();
    Ok(ChainTail {
        next_seq: seq + 1,
        prev: hash,
        unclean: (!ended_cleanly).then(|| unclean(unsealed, moved)),
    })
}

fn unclean(unsealed_records: u64, torn: Option<(u64, String, PathBuf)>) -> UncleanShutdown {
    let (torn_bytes, torn_sha256, torn_file) = match torn {
        Some((bytes, sha, file)) => (bytes, Some(sha), Some(file.display().to_string())),
        None => (0, None, None),
    };
    UncleanShutdown {
        event: EventKind::UncleanShutdown,
        unsealed_records,
        torn_bytes,
        torn_sha256,
        torn_file,
    }
}

/// `(seq, hash, event)` of a sealed line whose content matches its hash.
fn sealed_fields(line: &[u8]) -> Option<(u64, String, String)> {
    let text = std::str::from_utf8(line).ok()?;
    let (object, claimed) = unseal(text)?;
    if hex(digest(&SHA256, object.as_bytes()).as_ref()) != claimed {
        return None;
    }
    let fields: ChainFields = serde_json::from_str(&object).ok()?;
    Some((fields.seq, claimed.to_string(), fields.event))
}

/// Writes `bytes` to a new `<file>.torn-<unix ms>` beside the audit file and syncs it.
fn set_aside(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".torn-{millis}"));
    let aside = PathBuf::from(name);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&aside)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    Ok(aside)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests;
