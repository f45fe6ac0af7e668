//! The console's markup: the page frame, escaping, tables and inline SVG charts. Server-side
//! HTML only; no inline script or style (the console's CSP forbids both).

use std::fmt::Write;

use crate::audit::activity::Slice;
pub(crate) use crate::respond::escape_markup as esc;

/// The console's pages, in the order of the navigation.
pub const PAGES: [(&str, &str); 5] = [
    ("", "Overview"),
    ("events", "Events"),
    ("sessions", "Sessions"),
    ("explain", "Explain"),
    ("config", "Config"),
];

/// A whole page: `title`, the navigation with `current` marked, who is signed in, `body`.
pub fn frame(base: &str, current: &str, title: &str, actor: &str, body: &str) -> String {
    let mut nav = String::new();
    for (page, name) in PAGES {
        let mark = if page == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{base}{page}\"{mark}>{name}</a>");
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Portcullis console</title>\
         <link rel=\"stylesheet\" href=\"{base}console.css\">\
         <script src=\"{base}console.js\" defer></script></head><body>\
         <header><strong>Portcullis</strong> security console<nav>{nav}</nav>\
         <span class=\"who\">{actor}</span></header><main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
        actor = esc(actor),
    )
}

/// A table with a header row; `rows` are already escaped cells. Empty: `empty` instead.
pub fn table(headers: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}</p>", esc(empty));
    }
    let mut out = String::from("<table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    out.push_str(&rows_html(rows));
    out.push_str("</tbody></table>");
    out
}

/// Table rows of already escaped cells.
pub fn rows_html(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out
}

/// A form field's hidden CSRF token.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

/// A one-button POST form to `action` with hidden `fields` (already safe names; values are
/// escaped here).
pub fn button_form(
    action: &str,
    csrf: &str,
    fields: &[(&str, &str)],
    label: &str,
    class: &str,
) -> String {
    let mut hidden = csrf_field(csrf);
    for (name, value) in fields {
        let _ = write!(
            hidden,
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            esc(value)
        );
    }
    format!(
        "<form method=\"post\" action=\"{action}\" class=\"inline\">{hidden}\
         <button class=\"{class}\">{}</button></form>",
        esc(label)
    )
}

/// Unix seconds as `2026-12-03 19:41:07Z`.
pub fn time(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
}

/// `?key=value&…` with every value encoded; empty values are left out.
pub fn query<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.as_ref().is_empty() {
            out.append_pair(k.as_ref(), v.as_ref());
        }
    }
    let text = out.finish();
    if text.is_empty() {
        text
    } else {
        format!("?{text}")
    }
}

/// A labelled text field holding `value`.
pub fn text_field(name: &str, label: &str, value: &Option<String>) -> String {
    format!(
        "<label>{label}<input name=\"{name}\" value=\"{}\"></label>",
        esc(value.as_deref().unwrap_or_default())
    )
}

/// A bar chart of `slices` (requests, with the refused part in red), labelled by `label`.
pub fn bars(slices: &[Slice], caption: &str, label: impl Fn(u64) -> String) -> String {
    const WIDTH: u64 = 1200;
    const HEIGHT: u64 = 110;
    let most = slices.iter().map(|s| s.requests).max().unwrap_or(0).max(1);
    let n = slices.len().max(1) as u64;
    let step = WIDTH / n;
    let bar = step.saturating_sub(4).max(1);
    let mut svg = format!(
        "<figure><svg viewBox=\"0 0 {WIDTH} {}\" width=\"100%\" role=\"img\" \
         aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        HEIGHT + 20,
        esc(caption)
    );
    for (i, s) in slices.iter().enumerate() {
        let x = i as u64 * step + 2;
        let total = s.requests * HEIGHT / most;
        let refused = s.denied.min(s.requests) * HEIGHT / most;
        let _ = write!(
            svg,
            "<g><title>{}: {} requests, {} refused</title>\
             <rect class=\"ok\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{total}\"/>\
             <rect class=\"deny\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{refused}\"/></g>",
            esc(&label(s.start)),
            s.requests,
            s.denied,
            HEIGHT - total,
            HEIGHT - refused,
        );
        if i % 3 == 0 {
            let _ = write!(
                svg,
                "<text x=\"{x}\" y=\"{}\">{}</text>",
                HEIGHT + 14,
                esc(&label(s.start))
            );
        }
    }
    let _ = write!(
        svg,
        "</svg><figcaption>{} (peak {most}; refused in red)</figcaption></figure>",
        esc(caption)
    );
    svg
}

/// Horizontal bars for a few labelled counts (denials by reason).
pub fn hbars(items: &[(String, u64)], caption: &str) -> String {
    if items.is_empty() {
        return String::new();
    }
    let most = items.iter().map(|i| i.1).max().unwrap_or(1).max(1);
    let rows = items.len() as u64;
    let mut svg = format!(
        "<figure><svg viewBox=\"0 0 1200 {}\" width=\"100%\" role=\"img\" aria-label=\"{}\" \
         xmlns=\"http://www.w3.org/2000/svg\">",
        rows * 22,
        esc(caption)
    );
    for (i, (name, n)) in items.iter().enumerate() {
        let y = i as u64 * 22;
        let w = n * 700 / most;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text><rect class=\"deny\" x=\"400\" y=\"{}\" \
             width=\"{}\" height=\"16\"/><text x=\"{}\" y=\"{}\">{n}</text>",
            y + 13,
            esc(name),
            y + 2,
            w.max(1),
            406 + w,
            y + 13
        );
    }
    let _ = write!(
        svg,
        "</svg><figcaption>{}</figcaption></figure>",
        esc(caption)
    );
    svg
}
