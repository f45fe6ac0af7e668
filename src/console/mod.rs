//! The security console: a few server-rendered pages for the security team, at
//! `<reserved_prefix>admin/` on the public listeners (`admin.console`). Plain Rust: the shell
//! (`proxy/portal/console.rs`) checks the session and the CSRF token, then hands the request
//! here and writes the [`Answer`].
//!
//! What it shows comes from the audit writer's last day ([`crate::audit::activity`]), the
//! control plane ([`Control`]: sessions, kill switches) and the configuration; what it does goes
//! through the same [`Control`] calls as the admin API, each recorded as an `admin-call` with
//! the acting user as operator.

mod html;
mod pages;

use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use crate::audit::{AuditEvent, Auditor, EventKind, RequestRef};
use crate::config::{App, Config};
use crate::control::{Control, ControlError, Reload, Reloaded, Selector};
use crate::identity::Identity;
use crate::policy::Reason;

/// The console's stylesheet and its one script (auto-refresh of the events page), served
/// from the console's own path so that the CSP can stay `'self'`.
const STYLESHEET: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");

/// What the console keeps across reloads (built once by the server).
pub struct Desk {
    /// The control plane, swapped by a reload.
    pub control: Arc<ArcSwap<Control>>,
    /// Reads the configuration again (set once the server has built it).
    pub reloader: OnceLock<Arc<dyn Reload>>,
    /// The configuration in force and the last reload.
    pub status: Mutex<ConfigStatus>,
}

/// The configuration in force, as the Config page shows it.
#[derive(Debug, Clone, Default)]
pub struct ConfigStatus {
    /// SHA-256 of the file in force.
    pub sha256: String,
    /// The last reload (from any source: console, admin API, `SIGHUP`).
    pub last_reload: Option<ReloadResult>,
}

/// One reload and how it went.
#[derive(Debug, Clone)]
pub struct ReloadResult {
    /// When (unix seconds).
    pub at: u64,
    /// Who asked.
    pub by: String,
    /// What it did, or every problem found (the running configuration was kept).
    pub outcome: Result<Reloaded, Vec<String>>,
}

impl Desk {
    /// A desk over `control`, for the file whose SHA-256 is `sha256`.
    pub fn new(control: Arc<ArcSwap<Control>>, sha256: String) -> Desk {
        Desk {
            control,
            reloader: OnceLock::new(),
            status: Mutex::new(ConfigStatus {
                sha256,
                last_reload: None,
            }),
        }
    }

    /// Notes a reload's result (the server calls it for every reload).
    pub fn reloaded(&self, result: ReloadResult) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(done) = &result.outcome {
            status.sha256 = done.sha256.clone();
        }
        status.last_reload = Some(result);
    }

    fn status(&self) -> ConfigStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Whether a session may open the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// In.
    Admitted,
    /// Not signed in: to the sign-in page.
    SignIn,
    /// Signed in without the second factor the console requires: step up, as for apps.
    StepUp,
    /// Signed in, but none of the console's roles (or a machine caller).
    Refused(Reason),
}

/// One request to the console, once admitted.
pub struct ConsoleRequest<'a> {
    /// `GET`, `HEAD` or `POST`.
    pub method: &'a str,
    /// The path below the console's base (`events`, `sessions`, …; empty: the overview).
    pub page: &'a str,
    /// The query string.
    pub query: Option<&'a str>,
    /// A POST's form, already through the CSRF and same-origin checks.
    pub form: Option<&'a [u8]>,
    /// Who is acting.
    pub actor: &'a Identity,
    /// This browser's CSRF token, for the forms of the page.
    pub csrf: &'a str,
    /// The request, for the audit record of an action.
    pub request: RequestRef<'a>,
    /// Unix seconds.
    pub now: u64,
}

/// What the shell writes back.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A page (status, HTML).
    Page(u16, String),
    /// Rows of the events table, for the page's auto-refresh.
    Fragment(String),
    /// After an action: 303 to this console page.
    Redirect(String),
    /// The stylesheet or the script.
    Asset(&'static str, &'static str),
    /// No such page (or method).
    NotFound,
}

/// The console of one configuration generation.
pub struct Console {
    /// `<reserved_prefix>admin/`.
    base: String,
    roles: Vec<String>,
    require_mfa: bool,
    /// What `check` prints (no secrets).
    summary: String,
    apps: Vec<Arc<App>>,
    idps: Vec<String>,
    desk: Arc<Desk>,
    auditor: Auditor,
}

impl Console {
    /// The console `config` asks for (`admin.console`), if any.
    pub fn new(config: &Config, desk: Arc<Desk>, auditor: Auditor) -> Option<Console> {
        let settings = config.admin.console.as_ref()?;
        Some(Console {
            base: format!("{}admin/", config.server.reserved_prefix),
            roles: settings.roles.clone(),
            require_mfa: settings.require_mfa,
            summary: config.summary(),
            apps: config.apps.clone(),
            idps: config
                .identity_providers
                .iter()
                .map(|p| p.id.clone())
                .collect(),
            desk,
            auditor,
        })
    }

    /// `<reserved_prefix>admin/`: every page is below it.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Who gets in: a person's session with one of the roles, and MFA when required.
    pub fn admit(&self, identity: Option<&Identity>) -> Admission {
        let Some(who) = identity else {
            return Admission::SignIn;
        };
        if who.auth_method.is_machine() {
            return Admission::Refused(Reason::UserNotAllowed);
        }
        if !who.roles.iter().any(|r| self.roles.contains(r)) {
            return Admission::Refused(Reason::RoleMissing);
        }
        if self.require_mfa && !who.mfa {
            return Admission::StepUp;
        }
        Admission::Admitted
    }

    /// The answer to an admitted request.
    pub async fn answer(&self, request: &ConsoleRequest<'_>) -> Answer {
        match (request.method, request.page) {
            ("GET" | "HEAD", "console.css") => Answer::Asset("text/css; charset=utf-8", STYLESHEET),
            ("GET" | "HEAD", "console.js") => {
                Answer::Asset("text/javascript; charset=utf-8", SCRIPT)
            }
            ("GET" | "HEAD", page) => self.page(page, request).await,
            ("POST", action) => match request.form {
                Some(form) => self.act(action, form, request).await,
                None => Answer::NotFound,
            },
            _ => Answer::NotFound,
        }
    }

    async fn page(&self, page: &str, request: &ConsoleRequest<'_>) -> Answer {
        let view = pages::View {
            base: &self.base,
            csrf: request.csrf,
            query: Query(request.query.unwrap_or_default()),
            now: request.now,
        };
        let control = self.desk.control.load_full();
        let activity = self.auditor.activity();
        let (title, body) = match page {
            "" => (
                "Overview",
                pages::overview(&view, &activity.overview(request.now)),
            ),
            "events" if view.query.get("fragment").as_deref() == Some("1") => {
                return Answer::Fragment(pages::event_rows(
                    &view,
                    &activity.recent(&view.event_filter(), pages::EVENTS_SHOWN),
                ));
            }
            "events" => (
                "Events",
                pages::events(
                    &view,
                    &activity.recent(&view.event_filter(), pages::EVENTS_SHOWN),
                ),
            ),
            "sessions" => (
                "Sessions",
                pages::sessions(&view, &control, &self.apps).await,
            ),
            "user" => match view.query.get("id").filter(|id| !id.is_empty()) {
                Some(id) => ("User", pages::user(&view, &control, activity, &id).await),
                None => return Answer::Redirect(format!("{}sessions", self.base)),
            },
            "explain" => ("Explain", pages::explain(&view, &self.apps, &self.idps)),
            "config" => (
                "Config",
                pages::config(&view, &self.summary, &self.desk.status()),
            ),
            _ => return Answer::NotFound,
        };
        Answer::Page(200, self.frame(page, title, request.actor, &body))
    }

    fn frame(&self, page: &str, title: &str, actor: &Identity, body: &str) -> String {
        html::frame(&self.base, page, title, &actor.user_id, body)
    }

    /// A state change: done through [`Control`], recorded with the acting user, then back
    /// to the page it came from.
    async fn act(&self, action: &str, form: &[u8], request: &ConsoleRequest<'_>) -> Answer {
        let form = Query(std::str::from_utf8(form).unwrap_or_default());
        let by = request.actor.user_id.as_str();
        let control = self.desk.control.load_full();
        let mut record = AuditEvent::for_request(EventKind::AdminCall, request.request);
        record.method = Some("POST".into());
        record.path = Some(format!("{}{action}", self.base));
        record.operator = Some(by.to_string());
        let selector = selector_of(&form);
        // A session's row also names its owner, so that the record is found under the user.
        record.user = selector.user.clone().or_else(|| form.some("owner"));
        let done = match action {
            "revoke" => control
                .revoke_selected(selector, request.now)
                .await
                .map(|(_, detail)| (detail, "revoked")),
            "disable" => control
                .disable_selected(with_until(selector, request.now), by, request.now)
                .map(|(_, detail)| (detail, "disabled")),
            "enable" => control
                .enable_selected(selector)
                .map(|(_, detail)| (detail, "enabled")),
            "reload" => self.reload(by).await,
            _ => return Answer::NotFound,
        };
        let answer = match &done {
            Ok((detail, code)) => {
                record.status = Some(303);
                record.detail = Some(format!("console {action} {detail}"));
                let back = pages::back(&self.base, form.get("back").as_deref());
                let joiner = if back.contains('?') { '&' } else { '?' };
                Answer::Redirect(format!("{back}{joiner}done={code}"))
            }
            Err(refused) => {
                let status = refused.status();
                record.status = Some(status);
                record.detail = Some(format!("console {action} refused: {refused}"));
                let body = pages::refused(&self.base, refused);
                Answer::Page(status, self.frame("", "Not done", request.actor, &body))
            }
        };
        self.auditor.record(record).await;
        answer
    }

    async fn reload(&self, by: &str) -> Result<(String, &'static str), ControlError> {
        let Some(reloader) = self.desk.reloader.get() else {
            return Err(ControlError::Unavailable);
        };
        match reloader.reload(&format!("console:{by}")).await {
            Ok(done) => Ok((format!("sha256={}", done.sha256), "reloaded")),
            Err(problems) => Err(ControlError::ConfigRefused(problems)),
        }
    }
}

/// A urlencoded query or form.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query<'a>(&'a str);

impl Query<'_> {
    /// The first value of `name`, decoded; trimmed.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.0.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
    }

    /// The value of `name` when it is not empty.
    pub(crate) fn some(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

/// The control plane's selector from a console form: `sid`, or `kind` (user, entity, app,
/// idp) with `id`; `until` and `reason` for a disable.
fn selector_of(form: &Query<'_>) -> Selector {
    let id = form.some("id");
    let mut selector = Selector {
        sid: form.some("sid"),
        until: form.some("until"),
        reason: form.some("reason"),
        ..Selector::default()
    };
    match form.get("kind").as_deref() {
        Some("user") => selector.user = id,
        Some("entity") => selector.entity = id,
        Some("app") => selector.app = id,
        Some("idp") => selector.idp = id,
        _ => {}
    }
    selector
}

/// The form's `until` comes from a `datetime-local` field (no zone; the page says UTC) or is
/// RFC 3339 already; a duration (`2h`) counts from now.
fn with_until(mut selector: Selector, now: u64) -> Selector {
    if let Some(text) = selector.until.take() {
        selector.until = Some(if chrono::DateTime::parse_from_rfc3339(&text).is_ok() {
            text
        } else if let Ok(local) = chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M") {
            local.and_utc().to_rfc3339()
        } else if let Ok(span) = humantime::parse_duration(&text) {
            crate::control::rfc3339(now.saturating_add(span.as_secs()))
        } else {
            text
        });
    }
    selector
}

#[cfg(test)]
mod tests;
