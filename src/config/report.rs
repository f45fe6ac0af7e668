//! Configuration problems: each one names the file, the dotted key path, the line and a fix.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `apps[1].timeouts.read`.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// Every problem found in one file; rendered by `portcullis check` and by `run` on refusal.
#[derive(Debug, Clone)]
pub struct ConfigReport {
    /// The file the problems belong to.
    pub file: PathBuf,
    /// All problems, in file order where lines are known.
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for issue in &self.issues {
            match issue.line {
                Some(line) => write!(f, "{file}:{line}: {}: {}", issue.path, issue.message)?,
                None => write!(f, "{file}: {}: {}", issue.path, issue.message)?,
            }
            if let Some(hint) = &issue.hint {
                write!(f, "\n    hint: {hint}")?;
            }
            writeln!(f)?;
        }
        let n = self.issues.len();
        write!(f, "{n} problem{} in {file}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for ConfigReport {}

/// Collects issues while a file is compiled, attaching line numbers from the [`LineIndex`].
pub struct Issues<'a> {
    index: &'a LineIndex,
    found: Vec<ConfigIssue>,
    /// Sections or list items that did not deserialise: their follow-on problems ("is
    /// required" for keys that were present but unreadable) would only be noise.
    unreadable: Vec<String>,
}

impl<'a> Issues<'a> {
    /// Starts an empty collection over `index`.
    pub fn new(index: &'a LineIndex) -> Self {
        Issues {
            index,
            found: Vec::new(),
            unreadable: Vec::new(),
        }
    }

    /// Records a problem at `path` with a fix hint.
    pub fn add(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        if self.is_unreadable(path) {
            return;
        }
        let hint = hint.into();
        self.found.push(ConfigIssue {
            path: path.to_string(),
            line: self.index.line(path),
            message: message.into(),
            hint: (!hint.is_empty()).then_some(hint),
        });
    }

    /// Records a structural error for `section` (which is then treated as unreadable).
    pub fn push_unreadable(&mut self, section: &str, issue: ConfigIssue) {
        self.unreadable.push(section.to_string());
        self.push(issue);
    }

    /// True when `path` did not deserialise, or lies inside something that did not.
    pub fn is_unreadable(&self, path: &str) -> bool {
        self.unreadable.iter().any(|u| inside(path, u))
    }

    /// True when a problem was recorded at exactly `path`.
    pub fn has_issue_at(&self, path: &str) -> bool {
        self.found.iter().any(|issue| issue.path == path)
    }

    /// True when `path` or anything inside it did not deserialise: what it says is not fully
    /// known, so checks that depend on it from elsewhere would only guess.
    pub fn has_unreadable(&self, path: &str) -> bool {
        self.unreadable.iter().any(|u| inside(u, path))
    }

    /// Records an issue produced elsewhere (e.g. a serde error), filling in its line.
    pub fn push(&mut self, mut issue: ConfigIssue) {
        if issue.line.is_none() {
            issue.line = self.index.line(&issue.path);
        }
        self.found.push(issue);
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Finishes the collection, sorted by line so the report reads like the file.
    pub fn into_report(mut self, file: &Path) -> ConfigReport {
        self.found
            .sort_by_key(|issue| (issue.line.unwrap_or(usize::MAX), issue.path.clone()));
        ConfigReport {
            file: file.to_path_buf(),
            issues: self.found,
        }
    }
}

/// True when `path` is `parent` or a key or item inside it.
fn inside(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Maps dotted key paths (`apps[0].upstream`) to the 1-based line where their value starts.
///
/// serde gives locations only for syntax errors, and the compile step works on values that
/// have lost theirs, so the index is built once from the YAML event stream.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`; a file that does not parse yields an empty index.
    pub fn build(text: &str) -> Self {
        let mut builder = IndexBuilder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return LineIndex::default();
        }
        LineIndex {
            lines: builder.lines,
        }
    }

    /// The line of `path`, or of its nearest indexed parent.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut candidate = path;
        loop {
            if let Some(line) = self.lines.get(candidate) {
                return Some(*line);
            }
            let cut = candidate.rfind(['.', '['])?;
            candidate = &candidate[..cut];
        }
    }
}

enum Frame {
    Mapping {
        path: String,
        key: Option<(String, usize)>,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct IndexBuilder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl IndexBuilder {
    /// The path of the value that the current event starts, and the line of its key when it
    /// has one, advancing the parent's cursor.
    fn value_path(&mut self) -> Option<(String, Option<usize>)> {
        match self.stack.last_mut() {
            None => Some((String::new(), None)),
            Some(Frame::Mapping { path, key }) => {
                key.take().map(|(k, line)| (join(path, &k), Some(line)))
            }
            Some(Frame::Sequence { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some((p, None))
            }
        }
    }

    fn record(&mut self, mark_line: usize) -> String {
        let (path, key_line) = self.value_path().unwrap_or_default();
        self.lines
            .entry(path.clone())
            .or_insert(key_line.unwrap_or(mark_line));
        path
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for IndexBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        // yaml-rust2 markers count lines from 1.
        let line = mark.line().max(1);
        // A scalar in key position of a mapping is a key, not a value.
        if let (Event::Scalar(text, ..), Some(Frame::Mapping { key, .. })) =
            (&ev, self.stack.last_mut())
        {
            if key.is_none() {
                *key = Some((text.clone(), line));
                return;
            }
        }
        match ev {
            Event::Scalar(..) | Event::Alias(_) => {
                self.record(line);
            }
            Event::MappingStart(..) => {
                let path = self.record(line);
                self.stack.push(Frame::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.record(line);
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_keys_and_sequence_items() {
        let text = "server:\n  public_url: https://a.test\napps:\n  - id: one\n    upstream: http://x\n  - id: two\n    timeouts:\n      read: 5s\n";
        let index = LineIndex::build(text);
        assert_eq!(index.line("server"), Some(1));
        assert_eq!(index.line("server.public_url"), Some(2));
        assert_eq!(index.line("apps[0].upstream"), Some(5));
        assert_eq!(index.line("apps[1].id"), Some(6));
        assert_eq!(index.line("apps[1].timeouts.read"), Some(8));
        // an unknown key falls back to its nearest known parent
        assert_eq!(index.line("apps[1].timeouts.bogus"), Some(7));
    }
}
