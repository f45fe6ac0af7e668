//! Reading the trail back for people: the filters, JSON Lines and CSV of `audit export`, and
//! the table of `audit search`. Files are read line by line (rotated, compressed or current),
//! so an export of a year of records runs in constant memory.

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::time::SystemTime;

use serde_json::Value;

use super::files::{self, TrailFile};
use super::personal::PersonalKeys;

/// Which records an export or search keeps; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// From this time on (inclusive).
    pub from: Option<SystemTime>,
    /// Before this time (exclusive).
    pub to: Option<SystemTime>,
    /// `user`, exactly.
    pub user: Option<String>,
    /// `entity`, exactly.
    pub entity: Option<String>,
    /// `app`, exactly.
    pub app: Option<String>,
    /// `decision` (`allow` or `deny`).
    pub decision: Option<String>,
    /// `reason`, exactly.
    pub reason: Option<String>,
    /// `event`; without it, checkpoints (chain machinery) are left out.
    pub event: Option<String>,
}

impl Filter {
    /// Whether `record` is kept.
    pub fn matches(&self, record: &Value) -> bool {
        let text = |key: &str| record.get(key).and_then(Value::as_str);
        let same = |key: &str, wanted: &Option<String>| {
            wanted.as_deref().is_none_or(|w| text(key) == Some(w))
        };
        let event = text("event");
        match &self.event {
            Some(wanted) if event != Some(wanted.as_str()) => return false,
            None if event == Some("checkpoint") => return false,
            _ => {}
        }
        if self.from.is_some() || self.to.is_some() {
            let Some(at) = text("ts").and_then(|ts| humantime::parse_rfc3339(ts).ok()) else {
                return false;
            };
            if self.from.is_some_and(|from| at < from) || self.to.is_some_and(|to| at >= to) {
                return false;
            }
        }
        same("user", &self.user)
            && same("entity", &self.entity)
            && same("app", &self.app)
            && same("decision", &self.decision)
            && same("reason", &self.reason)
    }
}

/// `2026-12-03` (midnight UTC) or an RFC 3339 time such as `2026-12-03T10:00:00Z`.
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(&full)
        .or_else(|_| humantime::parse_rfc3339(&full))
        .map_err(|_| {
            format!(
                "`{text}` is not a date (2026-12-03) or an RFC 3339 time (2026-12-03T10:00:00Z)"
            )
        })
}

/// Output of `audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The records' lines as written (each still carries its hash).
    Jsonl,
    /// One row per record with [`COLUMNS`], RFC 4180.
    Csv,
}

/// The CSV columns, in order.
pub const COLUMNS: [&str; 20] = [
    "seq",
    "ts",
    "event",
    "decision",
    "reason",
    "status",
    "user",
    "entity",
    "idp",
    "auth_method",
    "app",
    "method",
    "host",
    "path",
    "client_ip",
    "request_id",
    "sid",
    "rule",
    "operator",
    "detail",
];

/// What one export or search read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records read.
    pub read: u64,
    /// Records kept.
    pub kept: u64,
}

/// Writes the records of `files` that `filter` keeps to `out`.
///
/// With `keys` (`audit.personal_data: pseudonymised`), records of users not forgotten are
/// shown with their personal fields and filtered on them; such a JSON line is the record as
/// read, no longer the line as written (its `hash` no longer covers it).
pub fn export(
    files: &[TrailFile],
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
    keys: Option<&PersonalKeys>,
) -> io::Result<Counts> {
    if format == Format::Csv {
        writeln!(out, "{}", COLUMNS.join(","))?;
    }
    each_match(files, filter, keys, |line, record, revealed| match format {
        Format::Jsonl if revealed => writeln!(out, "{record}"),
        Format::Jsonl => writeln!(out, "{line}"),
        Format::Csv => writeln!(out, "{}", csv_row(record)),
    })
}

/// The last `limit` records of `files` that `filter` keeps, as table rows (oldest first),
/// with the table's heading first.
pub fn search(
    files: &[TrailFile],
    filter: &Filter,
    limit: usize,
    keys: Option<&PersonalKeys>,
) -> io::Result<Vec<String>> {
    let mut last = VecDeque::with_capacity(limit.min(10_000));
    each_match(files, filter, keys, |_, record, _| {
        if last.len() == limit {
            last.pop_front();
        }
        if limit > 0 {
            last.push_back(table_row(record));
        }
        Ok(())
    })?;
    let heading = format!(
        "{:<24} {:<16} {:<6} {:<22} {:<24} {:<14} {}",
        "TIME", "EVENT", "", "REASON", "USER", "APP", "REQUEST / DETAIL"
    );
    Ok(std::iter::once(heading).chain(last).collect())
}

fn each_match(
    files: &[TrailFile],
    filter: &Filter,
    keys: Option<&PersonalKeys>,
    mut keep: impl FnMut(&str, &Value, bool) -> io::Result<()>,
) -> io::Result<Counts> {
    let mut counts = Counts::default();
    for file in files {
        let reader = files::reader(file)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.path.display())))?;
        for (i, line) in reader.lines().enumerate() {
            let line = line
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.path.display())))?;
            if line.is_empty() {
                continue;
            }
            let mut record: Value = serde_json::from_str(&line).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}:{}: not an audit record (run `portcullis audit verify`)",
                        file.path.display(),
                        i + 1
                    ),
                )
            })?;
            counts.read += 1;
            let revealed = keys.is_some_and(|keys| keys.reveal(&mut record));
            if filter.matches(&record) {
                counts.kept += 1;
                keep(&line, &record, revealed)?;
            }
        }
    }
    Ok(counts)
}

fn field(record: &Value, key: &str) -> String {
    match record.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// One CSV row of `record`.
pub fn csv_row(record: &Value) -> String {
    COLUMNS
        .iter()
        .map(|key| csv_cell(&field(record, key)))
        .collect::<Vec<_>>()
        .join(",")
}

/// RFC 4180 quoting, and no formula injection: a cell a spreadsheet would evaluate (leading
/// `=`, `+`, `-`, `@`, tab or carriage return) is prefixed with `'` and quoted.
pub fn csv_cell(value: &str) -> String {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let value = if formula {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if formula || value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// One line of `audit search`'s table; control characters of the record are shown escaped
/// so that a crafted path cannot move the terminal's cursor.
pub fn table_row(record: &Value) -> String {
    let clean = |text: String| -> String {
        text.chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect()
    };
    let request = match (field(record, "method"), field(record, "path")) {
        (method, path) if !method.is_empty() || !path.is_empty() => {
            let status = field(record, "status");
            format!("{method} {path} {status}").trim_end().to_string()
        }
        _ => field(record, "detail"),
    };
    let user = match field(record, "entity") {
        entity if entity.is_empty() => field(record, "user"),
        entity => format!("{} ({entity})", field(record, "user")),
    };
    clean(format!(
        "{:<24} {:<16} {:<6} {:<22} {:<24} {:<14} {}",
        field(record, "ts"),
        field(record, "event"),
        field(record, "decision"),
        field(record, "reason"),
        user,
        field(record, "app"),
        request
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_cell("alice"), "alice");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("+1"), "\"'+1\"");
        assert_eq!(csv_cell("-2"), "\"'-2\"");
        assert_eq!(csv_cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(csv_cell("\tx"), "\"'\tx\"");
        assert_eq!(csv_cell(""), "");
    }

    #[test]
    fn filters_match_every_set_field_and_the_time_window() {
        let record = json!({"seq": 7, "ts": "2026-12-03T10:00:00.000Z", "event": "access-denied",
            "decision": "deny", "reason": "forbidden-role", "user": "alice", "entity": "acme", "app": "chat"});
        let mut filter = Filter::default();
        assert!(filter.matches(&record));
        filter.user = Some("alice".into());
        filter.entity = Some("acme".into());
        filter.decision = Some("deny".into());
        filter.from = Some(parse_time("2026-12-03").expect("date"));
        filter.to = Some(parse_time("2026-12-03T10:00:00.001Z").expect("time"));
        assert!(filter.matches(&record));
        filter.to = Some(parse_time("2026-12-03T10:00:00Z").expect("time"));
        assert!(!filter.matches(&record), "to is exclusive");
        filter.to = None;
        filter.app = Some("other".into());
        assert!(!filter.matches(&record));
        let checkpoint = json!({"seq": 8, "event": "checkpoint"});
        assert!(
            !Filter::default().matches(&checkpoint),
            "chain machinery left out"
        );
        let only = Filter {
            event: Some("checkpoint".into()),
            ..Filter::default()
        };
        assert!(only.matches(&checkpoint));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn table_rows_escape_control_characters() {
        let record = json!({"ts": "t", "event": "access", "path": "/a\u{1b}[2J", "method": "GET"});
        let row = table_row(&record);
        assert!(!row.contains('\u{1b}'), "{row}");
        assert!(row.contains("\\u{1b}[2J"), "{row}");
    }
}
