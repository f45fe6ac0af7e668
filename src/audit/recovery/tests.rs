use super::super::chain::seal;
use super::*;

fn record(seq: u64, prev: &str, event: &str) -> (String, String) {
    seal(&format!(
        "{{\"seq\":{seq},\"ts\":\"t\",\"event\":\"{event}\",\"prev\":\"{prev}\"}}"
    ))
}

/// Three records, the second a checkpoint; returns the text and the hashes.
fn chain(events: &[&str]) -> (String, Vec<String>) {
    let (mut text, mut hashes, mut prev) = (String::new(), Vec::new(), GENESIS.to_string());
    for (i, event) in events.iter().enumerate() {
        let (line, hash) = record(i as u64 + 1, &prev, event);
        text.push_str(&line);
        text.push('\n');
        prev = hash.clone();
        hashes.push(hash);
    }
    (text, hashes)
}

fn recover_text(text: &[u8]) -> (io::Result<ChainTail>, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, text).expect("write");
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .expect("open");
    (recover(&mut file, &path), dir, path)
}

#[test]
fn a_sealed_file_continues_without_a_record() {
    let (text, hashes) = chain(&["access", "checkpoint"]);
    let (tail, _dir, _) = recover_text(text.as_bytes());
    let tail = tail.expect("recovers");
    assert_eq!(tail.next_seq, 3);
    assert_eq!(tail.prev, hashes[1]);
    assert_eq!(tail.unclean, None);
}

#[test]
fn whole_but_unsealed_records_are_reported() {
    let (text, hashes) = chain(&["access", "checkpoint", "access", "access-denied"]);
    let (tail, _dir, _) = recover_text(text.as_bytes());
    let tail = tail.expect("recovers");
    assert_eq!(tail.next_seq, 5);
    assert_eq!(tail.prev, hashes[3]);
    let unclean = tail.unclean.expect("unclean");
    assert_eq!(unclean.unsealed_records, 2);
    assert_eq!(unclean.torn_bytes, 0);
}

#[test]
fn a_torn_line_is_moved_aside_and_the_file_cut_back() {
    let (text, hashes) = chain(&["access", "checkpoint", "access"]);
    let torn = b"{\"seq\":4,\"ts\":\"t\",\"event\":\"acc";
    let damaged = [text.as_bytes(), torn].concat();
    let (tail, _dir, path) = recover_text(&damaged);
    let tail = tail.expect("recovers");
    assert_eq!(tail.next_seq, 4);
    assert_eq!(tail.prev, hashes[2]);
    let unclean = tail.unclean.expect("unclean");
    assert_eq!(unclean.unsealed_records, 1);
    assert_eq!(unclean.torn_bytes, torn.len() as u64);
    assert_eq!(
        unclean.torn_sha256.as_deref(),
        Some(hex(digest(&SHA256, torn).as_ref()).as_str())
    );
    let aside = unclean.torn_file.expect("moved");
    assert_eq!(std::fs::read(&aside).expect("kept"), torn);
    assert_eq!(std::fs::read_to_string(&path).expect("file"), text);
}

#[test]
fn a_torn_first_line_starts_a_new_chain() {
    let torn = b"{\"seq\":1,\"ts\"";
    let (tail, _dir, path) = recover_text(torn);
    let tail = tail.expect("recovers");
    assert_eq!((tail.next_seq, tail.prev.as_str()), (1, GENESIS));
    assert_eq!(tail.unclean.expect("unclean").torn_bytes, torn.len() as u64);
    assert_eq!(std::fs::read(&path).expect("file").len(), 0);
}

#[test]
fn an_edited_last_line_still_refuses_the_start() {
    let (text, _) = chain(&["access", "checkpoint"]);
    let edited = text.replace("checkpoint", "checkpoinT");
    let (tail, _dir, path) = recover_text(edited.as_bytes());
    let error = tail.expect_err("refused");
    assert!(error.to_string().contains("not a sealed audit record"));
    assert_eq!(
        std::fs::read_to_string(&path).expect("file"),
        edited,
        "untouched"
    );
}
