//! Reading the trail as it grows, from a sequence number on, across rotations: the queue each
//! sink delivers from. The files themselves are the spool, so a sink that is down for a day
//! loses nothing while the files are kept.

use std::fs::File;
use std::io::{self, BufRead};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::audit::files::{self, TrailFile};

/// One record read from the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Its `seq`.
    pub seq: u64,
    /// The line as written (no newline).
    pub text: String,
}

struct Open {
    reader: Box<dyn BufRead + Send>,
    /// `(dev, inode)` of the file when it was opened as the current file.
    current: Option<(u64, u64)>,
    /// A line read without its newline yet (the writer is between two writes).
    partial: String,
}

/// Records after `after`, file by file.
pub struct Tail {
    path: PathBuf,
    /// The last seq handed out.
    after: u64,
    open: Option<Open>,
    /// Records passed over because their file was gone (deleted by retention).
    skipped: u64,
}

impl Tail {
    /// Reads the trail whose current file is `path`, starting after record `after`.
    pub fn new(path: &Path, after: u64) -> Tail {
        Tail {
            path: path.to_path_buf(),
            after,
            open: None,
            skipped: 0,
        }
    }

    /// Records the trail no longer held when they were due, since the last call.
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    /// The next record, or `None` when there is none yet.
    pub fn next(&mut self) -> io::Result<Option<Line>> {
        let mut reopened = 0;
        loop {
            if self.open.is_none() {
                if reopened == 2 {
                    return Ok(None);
                }
                reopened += 1;
                self.open = self.open_from()?;
            }
            let Some(open) = self.open.as_mut() else {
                return Ok(None);
            };
            match read_whole_line(open)? {
                Some(line) => {
                    // Records already delivered are skipped (after a restart or a reopen).
                    if let Some(seq) = seq_of(&line).filter(|seq| *seq > self.after) {
                        self.skipped += seq - self.after - 1;
                        self.after = seq;
                        return Ok(Some(Line { seq, text: line }));
                    }
                }
                // At the end of this file: more may come (the current file), or the next
                // file holds the rest (it rotated, or it is a rotated file read to catch up);
                // reopening by seq finds it, and loses nothing written before a rotation.
                None => match open.current {
                    Some(id) if same_file(&self.path, id) => return Ok(None),
                    _ => self.open = None,
                },
            }
        }
    }

    /// Opens the file that holds `after + 1`: the last file whose first record is at or
    /// before it (the first file if the records before are gone).
    fn open_from(&self) -> io::Result<Option<Open>> {
        let files = files::trail(&self.path)?;
        let mut chosen: Option<&TrailFile> = None;
        for file in &files {
            match first_seq(file)? {
                Some(first) if first <= self.after + 1 => chosen = Some(file),
                Some(_) => {
                    if chosen.is_none() {
                        chosen = Some(file);
                    }
                    break;
                }
                None => {}
            }
        }
        let Some(file) = chosen else {
            return Ok(None);
        };
        let current = if file.rotated_at.is_none() {
            let opened = File::open(&file.path)?;
            let meta = opened.metadata()?;
            Some((meta.dev(), meta.ino()))
        } else {
            None
        };
        Ok(Some(Open {
            reader: files::reader(file)?,
            current,
            partial: String::new(),
        }))
    }
}

/// A whole line, or `None` at the end (a partial line is kept for the next call).
fn read_whole_line(open: &mut Open) -> io::Result<Option<String>> {
    let read = open.reader.read_line(&mut open.partial)?;
    if read == 0 || !open.partial.ends_with('\n') {
        return Ok(None);
    }
    let mut line = std::mem::take(&mut open.partial);
    line.pop();
    Ok(Some(line))
}

fn seq_of(line: &str) -> Option<u64> {
    // `{"seq":N,…`: the writer puts seq first.
    let rest = line.strip_prefix("{\"seq\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// The seq of a file's first record.
pub fn first_seq(file: &TrailFile) -> io::Result<Option<u64>> {
    let mut first = String::new();
    match files::reader(file) {
        Ok(mut reader) => {
            reader.read_line(&mut first)?;
            Ok(seq_of(&first))
        }
        // Compressed or deleted between the listing and now: skip it this time.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn same_file(path: &Path, id: (u64, u64)) -> bool {
    std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == id)
}

/// The last record's seq in the trail (0 for none): where a new sink starts. Reads the end of
/// the newest file that holds a record.
pub fn last_seq(path: &Path) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    for file in files::trail(path)?.iter().rev() {
        let last = if file.compressed {
            let mut last = None;
            for line in files::reader(file)?.lines() {
                last = seq_of(&line?).or(last);
            }
            last
        } else {
            let mut opened = File::open(&file.path)?;
            let len = opened.metadata()?.len();
            opened.seek(SeekFrom::Start(len.saturating_sub(1 << 20)))?;
            let mut end = Vec::new();
            opened.read_to_end(&mut end)?;
            String::from_utf8_lossy(&end).lines().rev().find_map(seq_of)
        };
        if let Some(seq) = last {
            return Ok(seq);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(seq: u64) -> String {
        format!("{{\"seq\":{seq},\"event\":\"access\"}}\n")
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("append");
    }

    fn drain(tail: &mut Tail) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(line) = tail.next().expect("read") {
            seqs.push(line.seq);
        }
        seqs
    }

    #[test]
    fn follows_the_trail_across_rotations_and_partial_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        append(&path, &(1..=3).map(record).collect::<String>());
        let mut tail = Tail::new(&path, 1);
        assert_eq!(drain(&mut tail), vec![2, 3], "from after the cursor");
        // Half a line: nothing until its newline arrives.
        let fourth = record(4);
        append(&path, &fourth[..5]);
        assert_eq!(drain(&mut tail), Vec::<u64>::new());
        append(&path, &fourth[5..]);
        append(&path, &record(5));
        // Rotated under the reader, with a record written just before the rename.
        let rotated = files::rotated_name(&path, std::time::SystemTime::now());
        std::fs::rename(&path, &rotated).expect("rotate");
        append(&path, &record(6));
        assert_eq!(drain(&mut tail), vec![4, 5, 6]);
        let compressed = files::compress(&rotated).expect("gzip");
        assert!(compressed.exists());
        append(&path, &record(7));
        assert_eq!(drain(&mut tail), vec![7]);
        // A restart with the cursor in the compressed file catches up from there.
        let mut restarted = Tail::new(&path, 4);
        assert_eq!(drain(&mut restarted), vec![5, 6, 7]);
        assert_eq!(last_seq(&path).expect("last"), 7);
        assert_eq!(restarted.take_skipped(), 0);

        // Records whose file retention deleted before delivery are counted, not waited for.
        let rotated = files::rotated_name(&path, std::time::SystemTime::now());
        std::fs::rename(&path, &rotated).expect("rotate");
        append(&path, &record(8));
        std::fs::remove_file(&compressed).expect("delete");
        std::fs::remove_file(&rotated).expect("delete");
        let mut late = Tail::new(&path, 3);
        assert_eq!(drain(&mut late), vec![8]);
        assert_eq!(late.take_skipped(), 4, "records 4 to 7 never delivered");
    }
}
