//! The audit trail on disk: the current file and the rotated ones beside it.
//!
//! A rotated file is named after the current one and the UTC time it was rotated,
//! `audit.jsonl.2026-12-03T17-40-00.123Z` (colons would need quoting in most shells), and ends
//! in `.gz` once compressed, so names sort in the order the files were written. The chain
//! runs on from file to file; `audit verify DIR` checks the links between them.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

const GZ: &str = ".gz";
/// `2026-12-03T17-40-00.123Z`
const STAMP_LEN: usize = 24;

/// One file of a trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailFile {
    /// Where it is.
    pub path: PathBuf,
    /// When it was rotated; `None` for the current file.
    pub rotated_at: Option<SystemTime>,
    /// gzip-compressed.
    pub compressed: bool,
}

/// The name a file rotated at `at` gets; a later millisecond if that name is taken.
pub fn rotated_name(current: &Path, at: SystemTime) -> PathBuf {
    let mut at = at;
    loop {
        let stamp = humantime::format_rfc3339_millis(at)
            .to_string()
            .replace(':', "-");
        let mut name = current.as_os_str().to_owned();
        name.push(format!(".{stamp}"));
        let candidate = PathBuf::from(name);
        let mut gz = candidate.as_os_str().to_owned();
        gz.push(GZ);
        if !candidate.exists() && !Path::new(&gz).exists() {
            return candidate;
        }
        at += Duration::from_millis(1);
    }
}

/// The rotation time in a rotated file's name after `base.`, if it is one.
fn parse_stamp(rest: &str) -> Option<(SystemTime, bool)> {
    let (stamp, compressed) = match rest.strip_suffix(GZ) {
        Some(stamp) => (stamp, true),
        None => (rest, false),
    };
    if stamp.len() != STAMP_LEN || !stamp.is_ascii() {
        return None;
    }
    // Back to RFC 3339: the two dashes of the time of day were colons.
    let mut text = stamp.to_string();
    text.replace_range(13..14, ":");
    text.replace_range(16..17, ":");
    let at = humantime::parse_rfc3339(&text).ok()?;
    Some((at, compressed))
}

/// The rotated files of the trail whose current file is `current`, oldest first, then the
/// current file if it exists.
pub fn trail(current: &Path) -> io::Result<Vec<TrailFile>> {
    let dir = match current.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let base = current
        .file_name()
        .and_then(OsStr::to_str)
        .ok_or_else(|| invalid(format!("{}: not a file name", current.display())))?;
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(base))
            .and_then(|n| n.strip_prefix('.'))
        else {
            continue;
        };
        if let Some((at, compressed)) = parse_stamp(rest) {
            files.push(TrailFile {
                path: entry.path(),
                rotated_at: Some(at),
                compressed,
            });
        }
    }
    files.sort_by_key(|f| f.rotated_at);
    if current.exists() {
        files.push(TrailFile {
            path: current.to_path_buf(),
            rotated_at: None,
            compressed: false,
        });
    }
    Ok(files)
}

/// The one trail in `dir`: its current file is the name that rotated files continue (or the
/// only `*.jsonl`). Two trails in one directory are an error that names them.
pub fn trail_in(dir: &Path) -> io::Result<Vec<TrailFile>> {
    let mut bases: Vec<String> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let base = match name.rfind(".20") {
            Some(at) if parse_stamp(&name[at + 1..]).is_some() => &name[..at],
            _ if name.ends_with(".jsonl") && holds_records(&dir.join(name)) => name,
            _ => continue,
        };
        if !bases.iter().any(|b| b == base) {
            bases.push(base.to_string());
        }
    }
    match bases.as_slice() {
        [base] => trail(&dir.join(base)),
        [] => Err(invalid(format!(
            "{}: no audit files (*.jsonl and their rotated files)",
            dir.display()
        ))),
        several => Err(invalid(format!(
            "{}: several audit trails ({}): name the file to read",
            dir.display(),
            several.join(", ")
        ))),
    }
}

/// Whether a `.jsonl` file is an audit trail (empty, or starting with a record), not another
/// JSON Lines file that lives beside it.
fn holds_records(path: &Path) -> bool {
    use std::io::Read;
    let mut start = [0u8; 7];
    match File::open(path).and_then(|mut f| f.read(&mut start)) {
        Ok(0) => true,
        Ok(n) => start[..n] == b"{\"seq\":"[..n],
        Err(_) => false,
    }
}

/// The files `paths` name, in order: a directory stands for its trail.
pub fn expand(paths: &[PathBuf]) -> io::Result<Vec<TrailFile>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(trail_in(path)?);
        } else {
            let compressed = path.extension().is_some_and(|e| e == "gz");
            files.push(TrailFile {
                path: path.clone(),
                rotated_at: None,
                compressed,
            });
        }
    }
    Ok(files)
}

/// A file's lines, decompressed when it is gzip.
pub fn reader(file: &TrailFile) -> io::Result<Box<dyn BufRead + Send>> {
    let raw = File::open(&file.path)?;
    Ok(if file.compressed {
        Box::new(BufReader::new(MultiGzDecoder::new(raw)))
    } else {
        Box::new(BufReader::new(raw))
    })
}

/// Compresses a rotated file to `<file>.gz` (written aside, synced, renamed into place) and
/// removes the original.
pub fn compress(path: &Path) -> io::Result<PathBuf> {
    let mut target = path.as_os_str().to_owned();
    target.push(GZ);
    let target = PathBuf::from(target);
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    {
        let mut input = File::open(path)?;
        let mut encoder = GzEncoder::new(File::create(&partial)?, flate2::Compression::default());
        io::copy(&mut input, &mut encoder)?;
        let out = encoder.finish()?;
        out.sync_all()?;
    }
    fs::rename(&partial, &target)?;
    fs::remove_file(path)?;
    if let Some(dir) = target.parent() {
        // The rename is durable once the directory is.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(target)
}

/// Rotated files of the trail rotated longer than `keep` before `now`.
pub fn expired(current: &Path, keep: Duration, now: SystemTime) -> io::Result<Vec<TrailFile>> {
    Ok(trail(current)?
        .into_iter()
        .filter(|f| {
            f.rotated_at
                .and_then(|at| now.duration_since(at).ok())
                .is_some_and(|age| age > keep)
        })
        .collect())
}

/// Rotated files not compressed yet.
pub fn uncompressed(current: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(trail(current)?
        .into_iter()
        .filter(|f| f.rotated_at.is_some() && !f.compressed)
        .map(|f| f.path)
        .collect())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn write_all(path: &Path, text: &str) -> io::Result<()> {
        File::create(path)?.write_all(text.as_bytes())
    }

    #[test]
    fn rotated_names_sort_in_time_order_and_parse_back() {
        let dir = std::env::temp_dir().join(format!("pc-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let current = dir.join("audit.jsonl");
        let t0 = humantime::parse_rfc3339("2026-12-03T09:05:07.100Z").expect("time");
        let first = rotated_name(&current, t0);
        assert!(first
            .to_string_lossy()
            .ends_with("audit.jsonl.2026-12-03T09-05-07.100Z"));
        write_all(&first, "a\n").expect("write");
        // The same millisecond again gets the next one.
        let second = rotated_name(&current, t0);
        assert!(second
            .to_string_lossy()
            .ends_with(".2026-12-03T09-05-07.101Z"));
        write_all(&second, "b\n").expect("write");
        let gz = compress(&second).expect("compress");
        assert!(!second.exists());
        write_all(&current, "c\n").expect("write");
        write_all(&dir.join("audit.jsonl.torn-123"), "x").expect("write");
        let files = trail_in(&dir).expect("trail");
        let paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, vec![first.clone(), gz.clone(), current.clone()]);
        assert_eq!(files[0].rotated_at, Some(t0));
        assert!(files[1].compressed);
        let mut text = String::new();
        reader(&files[1])
            .expect("open")
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "b\n");
        let later = t0 + Duration::from_secs(3600);
        let old = expired(&current, Duration::from_secs(1800), later).expect("expired");
        assert_eq!(old.len(), 2, "both rotated files, never the current one");
        // Another JSON Lines file beside it (the personal-data keys) is not a trail...
        write_all(&dir.join("keys.jsonl"), "{\"user\":\"a\"}\n").expect("write");
        assert_eq!(trail_in(&dir).expect("one trail").len(), 3);
        // ...another trail is.
        write_all(&dir.join("other.jsonl"), "{\"seq\":1}\n").expect("write");
        let error = trail_in(&dir).expect_err("two trails");
        assert!(
            error.to_string().contains("several audit trails"),
            "{error}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
