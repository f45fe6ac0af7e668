//! The bodies of the console's pages. Every value from a request, a session or the trail is
//! escaped where it is written ([`esc`]); links carry their values encoded ([`query`]).

use std::fmt::Write;
use std::sync::Arc;

use super::html::{
    bars, button_form, csrf_field, esc, hbars, query, rows_html, table, text_field, time,
};
use super::{ConfigStatus, Query};
use crate::audit::activity::{Activity, EventFilter, Overview, Recent, Totals};
use crate::config::{App, UserType};
use crate::control::{Control, ControlError};
use crate::identity::Identity;
use crate::policy::{Request, Verdict};
use crate::store::{Owner, Target};

/// Records on the events page.
pub const EVENTS_SHOWN: usize = 200;
/// Sessions listed at once.
const SESSIONS_SHOWN: usize = 500;

/// What every page needs to know about its request.
pub struct View<'a> {
    pub base: &'a str,
    pub csrf: &'a str,
    pub query: Query<'a>,
    pub now: u64,
}

impl View<'_> {
    /// The events page's filter, from its query (`since`: a span such as `15m`, `1h`, `24h`).
    pub fn event_filter(&self) -> EventFilter {
        let since = self
            .query
            .some("since")
            .and_then(|s| humantime::parse_duration(&s).ok())
            .map_or(0, |span| self.now.saturating_sub(span.as_secs()));
        EventFilter {
            user: self.query.some("user"),
            entity: self.query.some("entity"),
            app: self.query.some("app"),
            reason: self.query.some("reason"),
            since,
        }
    }

    /// What the last action did, said once at the top of the page it returned to.
    fn notice(&self) -> String {
        let text = match self.query.get("done").as_deref() {
            Some("revoked") => {
                "Revoked: the session(s) are refused from now on, and their open streams end."
            }
            Some("disabled") => "Turned off.",
            Some("enabled") => "Turned on again.",
            Some("reloaded") => "Configuration reloaded.",
            _ => return String::new(),
        };
        format!("<p class=\"notice\" role=\"status\">{text}</p>")
    }

    fn user_link(&self, user: &str) -> String {
        format!(
            "<a href=\"{}user{}\">{}</a>",
            self.base,
            esc(&query([("id", user)])),
            esc(user)
        )
    }
}

/// Where an action returns: a console page it names, else the sessions page.
pub fn back(base: &str, wanted: Option<&str>) -> String {
    match wanted {
        Some(path)
            if path.starts_with(base)
                && !path.contains("//")
                && !path.contains('\\')
                && path.chars().all(|c| c.is_ascii_graphic()) =>
        {
            path.to_string()
        }
        _ => format!("{base}sessions"),
    }
}

pub fn overview(view: &View<'_>, o: &Overview) -> String {
    let mut out = view.notice();
    let card = |name: &str, hour: u64, day: u64| {
        format!("<div class=\"card\"><span>{name}</span><b>{hour}</b><small>{day} in 24 h</small></div>")
    };
    let failures = |t: &Totals| t.sign_in_failures.iter().map(|(_, n)| n).sum::<u64>();
    let _ = write!(
        out,
        "<section class=\"cards\">{}{}{}{}</section>",
        card("Requests, last hour", o.hour.requests, o.day.requests),
        card("Refused, last hour", o.hour.denied, o.day.denied),
        card(
            "Sign-in failures, last hour",
            failures(&o.hour),
            failures(&o.day)
        ),
        card(
            "Rate-limited, last hour",
            o.hour.rate_limited,
            o.day.rate_limited
        ),
    );
    out.push_str(&bars(&o.hour_slices, "Last hour, by 5 minutes", |t| {
        time(t)[11..16].to_string()
    }));
    out.push_str(&bars(&o.day_slices, "Last 24 hours, by hour", |t| {
        time(t)[11..16].to_string()
    }));
    out.push_str("<h2>Refusals by reason</h2>");
    let reasons: Vec<(String, u64)> = o
        .day
        .denials
        .iter()
        .map(|(r, n)| (r.to_string(), *n))
        .collect();
    out.push_str(&hbars(&reasons, "Refusals by reason, last 24 hours"));
    let rows: Vec<Vec<String>> = o
        .day
        .denials
        .iter()
        .map(|(reason, day)| {
            let hour = o
                .hour
                .denials
                .iter()
                .find(|(r, _)| r == reason)
                .map_or(0, |x| x.1);
            vec![
                format!(
                    "<a href=\"{}events{}\">{}</a>",
                    view.base,
                    esc(&query([("reason", *reason)])),
                    esc(reason)
                ),
                hour.to_string(),
                day.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["Reason", "Last hour", "Last 24 h"],
        &rows,
        "No refusals.",
    ));
    out.push_str("<h2>Sign-in failures</h2>");
    let rows: Vec<Vec<String>> = o
        .day
        .sign_in_failures
        .iter()
        .map(|((idp, why), day)| {
            let hour = o
                .hour
                .sign_in_failures
                .iter()
                .find(|((i, w), _)| i == idp && w == why)
                .map_or(0, |x| x.1);
            vec![esc(idp), esc(why), hour.to_string(), day.to_string()]
        })
        .collect();
    out.push_str(&table(
        &["Provider", "Reason", "Last hour", "Last 24 h"],
        &rows,
        "No failed sign-ins.",
    ));
    out.push_str("<div class=\"columns\">");
    for (span, t) in [("last hour", &o.hour), ("last 24 h", &o.day)] {
        let users: Vec<Vec<String>> = t
            .top_denied_users
            .iter()
            .map(|(u, n)| vec![view.user_link(u), n.to_string()])
            .collect();
        let addresses: Vec<Vec<String>> = t
            .top_denied_addresses
            .iter()
            .map(|(a, n)| vec![esc(&a.to_string()), n.to_string()])
            .collect();
        let _ = write!(
            out,
            "<div><h2>Most refused, {span}</h2>{}{}</div>",
            table(&["User", "Refused"], &users, "No refused users."),
            table(&["Address", "Refused"], &addresses, "No refused addresses."),
        );
    }
    let _ = write!(
        out,
        "</div><p class=\"note\">Counted by this replica from its audit trail since {}.</p>",
        time(o.since)
    );
    out
}

pub fn events(view: &View<'_>, records: &[Recent]) -> String {
    let filter = view.event_filter();
    let since = view.query.get("since").unwrap_or_default();
    let mut spans = String::new();
    for (value, label) in [
        ("", "any time"),
        ("15m", "15 minutes"),
        ("1h", "1 hour"),
        ("24h", "24 hours"),
    ] {
        let selected = if since == value { " selected" } else { "" };
        let _ = write!(
            spans,
            "<option value=\"{value}\"{selected}>{label}</option>"
        );
    }
    let refresh = query(
        ["user", "entity", "app", "reason", "since"]
            .into_iter()
            .map(|k| (k, view.query.get(k).unwrap_or_default()))
            .chain([("fragment", "1".to_string())]),
    );
    format!(
        "{}<form method=\"get\" action=\"{base}events\" class=\"filters\">{}{}{}{}\
         <label>Since<select name=\"since\">{spans}</select></label><button>Filter</button></form>\
         <p class=\"note\">Refusals, failed sign-ins, revocations, admin actions and reloads, newest \
         first; refreshed every 5 seconds.</p>\
         <table>{EVENT_HEADERS}<tbody id=\"event-rows\" data-refresh=\"{base}events{}\">{}</tbody></table>",
        view.notice(),
        text_field("user", "User", &filter.user),
        text_field("entity", "Entity", &filter.entity),
        text_field("app", "App", &filter.app),
        text_field("reason", "Reason or event", &filter.reason),
        esc(&refresh),
        event_rows(view, records),
        base = view.base,
    )
}

/// The head of every table of records.
const EVENT_HEADERS: &str = "<thead><tr><th>Time</th><th>Event</th><th>Reason</th><th>User</th>\
    <th>Entity</th><th>App</th><th>Address</th><th>Request</th><th>Status</th><th>By</th>\
    <th>Detail</th></tr></thead>";

/// The events table's rows (also what the auto-refresh fetches).
pub fn event_rows(view: &View<'_>, records: &[Recent]) -> String {
    if records.is_empty() {
        return "<tr><td colspan=\"11\" class=\"empty\">Nothing yet.</td></tr>".into();
    }
    let opt = |v: &Option<String>| esc(v.as_deref().unwrap_or_default());
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                time(r.at),
                format!("<span class=\"ev {}\">{}</span>", r.event, r.event),
                r.reason.unwrap_or_default().to_string(),
                r.user
                    .as_deref()
                    .map(|u| view.user_link(u))
                    .unwrap_or_default(),
                opt(&r.entity),
                opt(&r.app),
                r.client_ip.map(|a| esc(&a.to_string())).unwrap_or_default(),
                opt(&r.request),
                r.status.map(|s| s.to_string()).unwrap_or_default(),
                opt(&r.operator),
                opt(&r.detail),
            ]
        })
        .collect();
    rows_html(&rows)
}

/// The sessions page: search, the sessions with a Revoke button each, the kill switches.
pub async fn sessions(view: &View<'_>, control: &Control, apps: &[Arc<App>]) -> String {
    let (user, entity, idp) = (
        view.query.some("user"),
        view.query.some("entity"),
        view.query.some("idp"),
    );
    let owner = match (&user, &entity, &idp) {
        (Some(u), _, _) => Owner::User(u),
        (None, Some(e), _) => Owner::Entity(e),
        (None, None, Some(i)) => Owner::Provider(i),
        _ => Owner::All,
    };
    let here = format!(
        "{}sessions{}",
        view.base,
        query([
            ("user", user.as_deref().unwrap_or_default()),
            ("entity", entity.as_deref().unwrap_or_default()),
            ("idp", idp.as_deref().unwrap_or_default()),
        ])
    );
    let mut out = view.notice();
    let _ = write!(
        out,
        "<form method=\"get\" action=\"{}sessions\" class=\"filters\">{}{}{}<button>Search</button></form>",
        view.base,
        text_field("user", "User", &user),
        text_field("entity", "Entity", &entity),
        text_field("idp", "Provider", &idp),
    );
    out.push_str(&session_table(view, control, owner, &here).await);
    out.push_str(&switches(view, control, &here));
    out.push_str("<h2>Turn off</h2>");
    out.push_str(&disable_form(view, &here, None, apps));
    out
}

async fn session_table(view: &View<'_>, control: &Control, owner: Owner<'_>, here: &str) -> String {
    let listed = match control.live(owner, view.now).await {
        Ok(listed) => listed,
        Err(e) => return format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
    };
    let mut rows = Vec::new();
    for r in listed.iter().take(SESSIONS_SHOWN) {
        rows.push(vec![
            view.user_link(&r.user_id),
            esc(r.entity.as_deref().unwrap_or_default()),
            esc(&r.idp),
            time(r.issued_at),
            time(r.last_seen),
            time(r.expires_at),
            button_form(
                &format!("{}revoke", view.base),
                view.csrf,
                &[("sid", &r.sid), ("owner", &r.user_id), ("back", here)],
                "Revoke",
                "danger",
            ),
        ]);
    }
    let shown = if listed.len() > SESSIONS_SHOWN {
        format!(
            "<p class=\"note\">The first {SESSIONS_SHOWN} of {} sessions; narrow the search.</p>",
            listed.len()
        )
    } else if listed.is_empty() {
        String::new()
    } else {
        format!("<p class=\"note\">{} live session(s).</p>", listed.len())
    };
    shown
        + &table(
            &[
                "User",
                "Entity",
                "Provider",
                "Signed in",
                "Last seen",
                "Ends",
                "",
            ],
            &rows,
            "No live sessions match.",
        )
}

/// The kill switches that hold, each with an Enable button.
fn switches(view: &View<'_>, control: &Control, here: &str) -> String {
    let rows: Vec<Vec<String>> = control
        .switches(view.now)
        .iter()
        .map(|s| {
            let (kind, id) = match &s.target {
                Target::User(id) => ("user", id),
                Target::Entity(id) => ("entity", id),
                Target::App(id) => ("app", id),
            };
            vec![
                kind.to_string(),
                if kind == "user" {
                    view.user_link(id)
                } else {
                    esc(id)
                },
                s.until
                    .map(time)
                    .unwrap_or_else(|| "until turned on".into()),
                esc(s.reason.as_deref().unwrap_or_default()),
                esc(&s.by),
                time(s.at),
                button_form(
                    &format!("{}enable", view.base),
                    view.csrf,
                    &[("kind", kind), ("id", id), ("back", here)],
                    "Enable",
                    "",
                ),
            ]
        })
        .collect();
    format!(
        "<h2>Turned off</h2>{}",
        table(
            &["Kind", "Id", "Until", "Reason", "By", "At", ""],
            &rows,
            "Nothing is turned off."
        )
    )
}

/// The form that turns a user, entity or app off; `user` fixes the target.
fn disable_form(view: &View<'_>, here: &str, user: Option<&str>, apps: &[Arc<App>]) -> String {
    let target = match user {
        Some(id) => format!(
            "<input type=\"hidden\" name=\"kind\" value=\"user\"><input type=\"hidden\" name=\"id\" value=\"{}\">",
            esc(id)
        ),
        None => {
            let ids: Vec<String> = apps.iter().map(|a| esc(&a.id)).collect();
            format!(
                "<label>Kind<select name=\"kind\"><option value=\"entity\">entity</option>\
                 <option value=\"app\">app</option><option value=\"user\">user</option></select></label>\
                 <label>Id<input name=\"id\" required placeholder=\"{}\"></label>",
                ids.join(", ")
            )
        }
    };
    format!(
        "<form method=\"post\" action=\"{}disable\" class=\"filters\">{}{target}\
         <input type=\"hidden\" name=\"back\" value=\"{}\">\
         <label>Until (UTC, empty: until turned on)<input type=\"datetime-local\" name=\"until\"></label>\
         <label>Reason<input name=\"reason\" maxlength=\"200\"></label>\
         <button class=\"danger\">{}</button></form>",
        view.base,
        csrf_field(view.csrf),
        esc(here),
        if user.is_some() { "Disable user" } else { "Turn off" },
    )
}

/// A user's page: their sessions, revoke all, disable or enable, their latest records.
pub async fn user(view: &View<'_>, control: &Control, activity: &Activity, id: &str) -> String {
    let here = format!("{}user{}", view.base, query([("id", id)]));
    let mut out = view.notice();
    let _ = write!(out, "<h2>{}</h2>", esc(id));
    out.push_str(&session_table(view, control, Owner::User(id), &here).await);
    out.push_str("<div class=\"actions\">");
    out.push_str(&button_form(
        &format!("{}revoke", view.base),
        view.csrf,
        &[("kind", "user"), ("id", id), ("back", &here)],
        "Revoke all of this user",
        "danger",
    ));
    let off = control
        .switches(view.now)
        .into_iter()
        .find(|s| s.target == Target::User(id.to_string()));
    match off {
        Some(s) => {
            let _ = write!(
                out,
                "<p class=\"error\">Disabled by {} at {}{}.</p>{}",
                esc(&s.by),
                time(s.at),
                s.until
                    .map(|u| format!(" until {}", time(u)))
                    .unwrap_or_default(),
                button_form(
                    &format!("{}enable", view.base),
                    view.csrf,
                    &[("kind", "user"), ("id", id), ("back", &here)],
                    "Enable user",
                    "",
                )
            );
        }
        None => out.push_str(&disable_form(view, &here, Some(id), &[])),
    }
    out.push_str("</div><h2>Latest records</h2>");
    let filter = EventFilter {
        user: Some(id.to_string()),
        ..EventFilter::default()
    };
    let _ = write!(
        out,
        "<table>{EVENT_HEADERS}<tbody>{}</tbody></table>",
        event_rows(view, &activity.recent(&filter, 50))
    );
    out
}

/// The Explain page: the form, and the decision layer by layer once an app is chosen.
pub fn explain(view: &View<'_>, apps: &[Arc<App>], idps: &[String]) -> String {
    let q = &view.query;
    let value = |name: &str| esc(&q.get(name).unwrap_or_default());
    let options = |items: &mut dyn Iterator<Item = &str>, chosen: Option<String>| {
        let mut out = String::new();
        for item in items {
            let selected = if chosen.as_deref() == Some(item) {
                " selected"
            } else {
                ""
            };
            let _ = write!(out, "<option{selected}>{}</option>", esc(item));
        }
        out
    };
    let checked = |name: &str| {
        if q.get(name).as_deref() == Some("on") {
            " checked"
        } else {
            ""
        }
    };
    let mut out = format!(
        "<form method=\"get\" action=\"{}explain\" class=\"explain\">\
         <label>App<select name=\"app\">{}</select></label>\
         <label>Method<select name=\"method\">{}</select></label>\
         <label>Path<input name=\"path\" value=\"{}\" placeholder=\"/api/chat?entity=acme\" required></label>\
         <label>User id<input name=\"user\" value=\"{}\"></label>\
         <label>User type<select name=\"user_type\">{}</select></label>\
         <label>Roles (comma-separated)<input name=\"roles\" value=\"{}\"></label>\
         <label>Entity<input name=\"entity\" value=\"{}\"></label>\
         <label>Provider<select name=\"idp\">{}</select></label>\
         <label>Client address<input name=\"ip\" value=\"{}\"></label>\
         <label class=\"check\"><input type=\"checkbox\" name=\"mfa\"{}> Signed in with MFA</label>\
         <label class=\"check\"><input type=\"checkbox\" name=\"anonymous\"{}> Not signed in</label>\
         <button>Explain</button></form>",
        view.base,
        options(&mut apps.iter().map(|a| a.id.as_str()), q.get("app")),
        options(&mut ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].into_iter(), q.get("method")),
        value("path"),
        value("user"),
        options(&mut ["external-user", "internal-user"].into_iter(), q.get("user_type")),
        value("roles"),
        value("entity"),
        options(&mut idps.iter().map(String::as_str), q.get("idp")),
        value("ip"),
        checked("mfa"),
        checked("anonymous"),
    );
    if let Some(app) = q
        .some("app")
        .and_then(|id| apps.iter().find(|a| a.id == id))
    {
        out.push_str(&explained(view, app, idps));
    }
    out
}

fn explained(view: &View<'_>, app: &Arc<App>, idps: &[String]) -> String {
    let q = &view.query;
    let target = q.get("path").unwrap_or_else(|| "/".into());
    let (raw_path, query_text) = match target.split_once('?') {
        Some((p, t)) => (p.to_string(), Some(t.to_string())),
        None => (target.clone(), None),
    };
    let Ok(path) = crate::route::normalize_path(&raw_path) else {
        return "<p class=\"error\">Decision: deny (bad-request): the path is refused before any policy.</p>".into();
    };
    let client_ip = match q.some("ip").map(|ip| ip.parse()) {
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => {
            return "<p class=\"error\">The client address is not an IP address.</p>".into()
        }
        None => None,
    };
    let method = q
        .get("method")
        .unwrap_or_else(|| "GET".into())
        .to_ascii_uppercase();
    let request = Request {
        method: &method,
        path: &path,
        query: query_text.as_deref(),
        client_ip,
    };
    let user_type = match q.get("user_type").as_deref() {
        Some("internal-user") => UserType::Internal,
        _ => UserType::External,
    };
    let identity = Identity::imagined(
        q.some("user").as_deref().unwrap_or("explain-user"),
        user_type,
        q.get("roles")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect(),
        q.some("entity"),
        q.some("idp")
            .or_else(|| idps.first().cloned())
            .unwrap_or_default(),
        q.get("mfa").as_deref() == Some("on"),
    );
    let anonymous = q.get("anonymous").as_deref() == Some("on");
    let explanation = crate::policy::explain(app, &request, (!anonymous).then_some(&identity));
    let (verdict, reason, answer) = explanation.decision.answer();
    let rows: Vec<Vec<String>> = explanation
        .steps
        .iter()
        .map(|step| {
            let (class, mark) = match step.verdict {
                Verdict::Pass => ("pass", "pass"),
                Verdict::Fail => ("fail", "FAIL"),
                Verdict::Skip => ("skip", "skip"),
            };
            vec![
                format!("<span class=\"{class}\">{mark}</span>"),
                step.layer.to_string(),
                esc(&step.detail),
            ]
        })
        .collect();
    format!(
        "<section class=\"decision {verdict}\"><h2>Decision: {verdict} ({reason}) → {}</h2>\
         <p>{} {}{} to app {}; rule: {}</p>{}</section>",
        esc(answer),
        esc(&method),
        esc(&path),
        esc(&query_text.map(|t| format!("?{t}")).unwrap_or_default()),
        esc(&app.id),
        esc(explanation
            .rule
            .as_deref()
            .unwrap_or("(none: the app's access applies)")),
        table(&["", "Layer", "Why"], &rows, "No layers."),
    )
}

/// The Config page: what `check` prints, the file's SHA-256, the last reload, Reload.
pub fn config(view: &View<'_>, summary: &str, status: &ConfigStatus) -> String {
    let mut out = view.notice();
    let _ = write!(
        out,
        "<p>SHA-256 of the file in force: <code id=\"config-sha256\">{}</code></p>",
        esc(&status.sha256)
    );
    match &status.last_reload {
        None => out.push_str("<p>No reload since the process started.</p>"),
        Some(r) => {
            let _ = write!(out, "<p>Last reload: {} by {}: ", time(r.at), esc(&r.by));
            match &r.outcome {
                Ok(done) if done.needs_handover.is_empty() => out.push_str("applied.</p>"),
                Ok(done) => {
                    let _ = write!(
                        out,
                        "applied; at the next process handover: {}.</p>",
                        esc(&done.needs_handover.join(", "))
                    );
                }
                Err(problems) => {
                    out.push_str(
                        "refused (the running configuration was kept):</p><ul class=\"error\">",
                    );
                    for p in problems {
                        let _ = write!(out, "<li>{}</li>", esc(p));
                    }
                    out.push_str("</ul>");
                }
            }
        }
    }
    out.push_str(&button_form(
        &format!("{}reload", view.base),
        view.csrf,
        &[("back", &format!("{}config", view.base))],
        "Reload the configuration file",
        "",
    ));
    let _ = write!(
        out,
        "<h2>As Portcullis understood it</h2><pre>{}</pre>",
        esc(summary)
    );
    out
}

/// Why an action was not done.
pub fn refused(base: &str, error: &ControlError) -> String {
    let mut out = format!("<p class=\"error\">{}</p>", esc(&error.to_string()));
    if let ControlError::ConfigRefused(problems) = error {
        out.push_str("<ul>");
        for p in problems {
            let _ = write!(out, "<li>{}</li>", esc(p));
        }
        out.push_str("</ul>");
    }
    let _ = write!(
        out,
        "<p><a href=\"{base}sessions\">Back to the sessions</a></p>"
    );
    out
}
