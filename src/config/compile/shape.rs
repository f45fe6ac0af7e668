//! Reading a section (or list item) that does not deserialise: finds every piece of it that
//! does not read — unknown keys and values of the wrong type, at any depth — each with its
//! path and a hint, and keeps the rest so that the other sections see what the file says.
//!
//! The raw structs are the only description of a section's shape: a piece is tried on its own
//! by deserialising the section with nothing but that piece in it (every raw key is optional),
//! and a mapping or list that reads when empty is split further.

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use crate::config::raw::{EXPECTED_BYTES, EXPECTED_DURATION};
use crate::config::report::ConfigIssue;

/// One step from the section down to a piece of it.
enum Step {
    Key(Value),
    Item,
}

/// Every piece of `value` (the section or list item at `path`) that does not read as a `T`,
/// and `value` without those pieces.
pub(super) fn unreadable_pieces<T: DeserializeOwned>(
    path: &str,
    value: Value,
) -> (Vec<ConfigIssue>, Option<Value>) {
    let mut found = Vec::new();
    let kept = prune::<T>(&mut Vec::new(), path, value, &mut found);
    (found, kept)
}

/// `node`, at the end of `spine`, without its pieces that do not read (each one recorded in
/// `found`); `None` when `node` itself does not read.
fn prune<T: DeserializeOwned>(
    spine: &mut Vec<Step>,
    path: &str,
    node: Value,
    found: &mut Vec<ConfigIssue>,
) -> Option<Value> {
    let Some(message) = read_error::<T>(spine, node.clone()) else {
        return Some(node);
    };
    let before = found.len();
    let kept = match node {
        Value::Mapping(map)
            if !map.is_empty()
                && read_error::<T>(spine, Value::Mapping(Mapping::new())).is_none() =>
        {
            let mut kept = Mapping::new();
            for (key, value) in map {
                let at = format!("{path}.{}", key_text(&key));
                spine.push(Step::Key(key.clone()));
                if let Some(value) = prune::<T>(spine, &at, value, found) {
                    kept.insert(key, value);
                }
                spine.pop();
            }
            Value::Mapping(kept)
        }
        Value::Sequence(items)
            if !items.is_empty()
                && read_error::<T>(spine, Value::Sequence(Vec::new())).is_none() =>
        {
            spine.push(Step::Item);
            let kept = items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| prune::<T>(spine, &format!("{path}[{i}]"), item, found))
                .collect();
            spine.pop();
            Value::Sequence(kept)
        }
        leaf => {
            found.push(issue(path, message, &leaf));
            return None;
        }
    };
    if found.len() == before {
        // Every piece reads on its own but not all together: the whole is at fault.
        found.push(issue(path, message, &kept));
        return None;
    }
    Some(kept)
}

/// Why a `T` holding nothing but `piece`, placed at the end of `spine`, does not read.
fn read_error<T: DeserializeOwned>(spine: &[Step], piece: Value) -> Option<String> {
    let whole = spine.iter().rev().fold(piece, |inner, step| match step {
        Step::Key(key) => Value::Mapping(Mapping::from_iter([(key.clone(), inner)])),
        Step::Item => Value::Sequence(vec![inner]),
    });
    serde_path_to_error::deserialize::<_, T>(whole)
        .err()
        .map(|e| e.into_inner().to_string())
}

fn issue(path: &str, message: String, node: &Value) -> ConfigIssue {
    ConfigIssue {
        path: path.to_string(),
        line: None,
        hint: Some(hint(&message, node)),
        message,
    }
}

/// A map key as it appears in a dotted path.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => scalar_text(other).unwrap_or_else(|| format!("{other:?}")),
    }
}

/// A scalar as it would be written in the file.
fn scalar_text(node: &Value) -> Option<String> {
    match node {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => serde_yaml_ng::to_string(node)
            .ok()
            .map(|s| s.trim_end().to_string()),
        _ => None,
    }
}

/// How to fix a value that does not read: `message` is serde's, `node` what the file has.
fn hint(message: &str, node: &Value) -> String {
    if message.starts_with("unknown field") {
        return "remove the key or fix its spelling; see docs/configuration.md".into();
    }
    if message.contains("expected field identifier") {
        return "keys are names; see docs/configuration.md".into();
    }
    let node = match node {
        Value::Tagged(tagged) => &tagged.value,
        other => other,
    };
    if message.contains(EXPECTED_DURATION) {
        return duration_hint(node);
    }
    if message.contains(EXPECTED_BYTES) {
        return bytes_hint(node);
    }
    let scalar = scalar_text(node);
    if message.contains("expected a sequence") {
        return match (node, scalar) {
            // Inside `[...]`, a `:` or `,` would split or remap the item.
            (Value::String(s), _) if s.contains([':', ',', '[', ']', '{', '}', '#']) => {
                format!("write a list: [{s:?}]")
            }
            (_, Some(s)) => format!("write a list: [{s}]"),
            _ => "write a list, e.g. [a, b]".into(),
        };
    }
    if message.contains("expected a string") {
        if let Some(s) = scalar.filter(|_| matches!(node, Value::Number(_) | Value::Bool(_))) {
            return format!("put it in quotes: \"{s}\"");
        }
    }
    if message.contains("expected a boolean") {
        return "write true or false".into();
    }
    if let (Some(expected), Value::String(s)) = (message.split("expected ").nth(1), node) {
        let integer = ["u8", "u16", "u32", "u64", "usize", "i64"].contains(&expected.trim());
        if integer && s.trim().parse::<u64>().is_ok() {
            return format!("write it without quotes: {}", s.trim());
        }
    }
    if message.contains("expected struct") || message.contains("expected a map") {
        return "write `key: value` pairs under it; see docs/configuration.md".into();
    }
    "see docs/configuration.md for the expected type".into()
}

fn duration_hint(node: &Value) -> String {
    if let Value::Number(n) = node {
        if let Some(whole) = n.as_u64() {
            return format!("add a unit: {whole}s");
        }
        if let Some(ms) = n.as_f64().map(|x| x * 1000.0) {
            if ms >= 0.0 && ms.fract() == 0.0 && ms < 1e15 {
                return format!("add a unit: {ms}ms");
            }
        }
    }
    "write a duration like 30s, 5m, 12h or 250ms".into()
}

fn bytes_hint(node: &Value) -> String {
    if let Value::String(s) = node {
        let s = s.trim();
        if s.parse::<u64>().is_ok() {
            return format!("write it without quotes: {s}");
        }
        if let Some(n) = bytes_with_unit(s) {
            return format!("sizes are in bytes, without a unit: write {n}");
        }
    }
    "write a whole number of bytes, e.g. 16384".into()
}

/// `16KiB`, `16 KB`, `16k`, `1MiB`, `2m` … as a number of bytes (K and M are powers of 1024).
fn bytes_with_unit(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}
