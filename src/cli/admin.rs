//! `portcullis admin …`: the admin API from a shell, for incident response. Human output by
//! default, the API's JSON with `--json`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::config::Secret;

/// Where the admin API is and who calls it.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin listener.
    #[arg(long, default_value = "http://127.0.0.1:9901", global = true)]
    url: String,
    /// The admin token, as `env:NAME` or `file:PATH` (never on the command line itself).
    #[arg(long, default_value = "env:PORTCULLIS_ADMIN_TOKEN", global = true)]
    token: String,
    /// Print the API's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    call: AdminCall,
}

/// Whose sessions or switch a call names.
#[derive(Debug, Args)]
struct Who {
    /// A user id.
    #[arg(long)]
    user: Option<String>,
    /// An entity (tenant).
    #[arg(long)]
    entity: Option<String>,
}

#[derive(Debug, Subcommand)]
enum AdminCall {
    /// List live sessions (all, or of a user, an entity or an identity provider).
    Sessions {
        #[command(flatten)]
        who: Who,
        /// An identity provider id.
        #[arg(long)]
        idp: Option<String>,
    },
    /// End sessions on every replica: one (`--sid`), a user's, an entity's, a provider's, or
    /// `--all`. Their open streams end within a second.
    Revoke {
        #[command(flatten)]
        who: Who,
        /// A session id.
        #[arg(long)]
        sid: Option<String>,
        /// An identity provider id.
        #[arg(long)]
        idp: Option<String>,
        /// Every session.
        #[arg(long)]
        all: bool,
    },
    /// Turn a user, an entity or an app off (until `--until`, RFC 3339, or until enabled).
    Disable {
        #[command(flatten)]
        who: Who,
        /// An app id.
        #[arg(long)]
        app: Option<String>,
        /// When it turns on again by itself (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Why (recorded).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Turn a user, an entity or an app on again.
    Enable {
        #[command(flatten)]
        who: Who,
        /// An app id.
        #[arg(long)]
        app: Option<String>,
    },
    /// List what is turned off.
    Disabled,
    /// Read the configuration file again, check it in full and swap it in (the running one
    /// is kept when the file has problems).
    Reload,
    /// Erase a user from the audit trail (`audit.personal_data: pseudonymised`): their
    /// sessions are revoked and their key deleted, so every record about them, in every file
    /// and export, stays verifiable and becomes unreadable.
    Forget {
        /// The user id.
        #[arg(long)]
        user: String,
    },
}

/// Runs one admin call; exit 0 on success, 1 when the API refused, 2 when it was not reached.
pub fn admin(args: AdminArgs) -> ExitCode {
    run(&args.url, &args.token, args.json, &args.call)
}

/// `portcullis audit forget`: the same call as `admin forget`.
pub(super) fn forget(url: &str, token: &str, json: bool, user: String) -> ExitCode {
    run(url, token, json, &AdminCall::Forget { user })
}

fn run(base: &str, token_spec: &str, json: bool, admin_call: &AdminCall) -> ExitCode {
    let token = match Secret::resolve(token_spec, std::path::Path::new(".")) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: --token {token_spec}: {e}");
            return ExitCode::from(2);
        }
    };
    let (method, path, body) = request(admin_call);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let answer = runtime.block_on(call(method, &url, token.expose().trim(), body));
    let (status, value) = match answer {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("error: {url}: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{value}");
    } else if status == 200 {
        print!("{}", human(admin_call, &value));
    } else {
        eprintln!(
            "error: {status}: {}",
            value["error"].as_str().unwrap_or("(no message)")
        );
        for problem in value["problems"].as_array().into_iter().flatten() {
            eprintln!("  {}", problem.as_str().unwrap_or_default());
        }
    }
    if status == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Method, path and body of the API call for `call`.
fn request(call: &AdminCall) -> (&'static str, String, Option<Value>) {
    let named = |who: &Who, extra: &[(&str, &Option<String>)]| {
        let mut body = serde_json::Map::new();
        for (key, value) in [("user", &who.user), ("entity", &who.entity)]
            .into_iter()
            .chain(extra.iter().copied())
        {
            if let Some(value) = value {
                body.insert(key.to_string(), json!(value));
            }
        }
        body
    };
    match call {
        AdminCall::Sessions { who, idp } => {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(
                    [("user", &who.user), ("entity", &who.entity), ("idp", idp)]
                        .into_iter()
                        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v))),
                )
                .finish();
            let path = if query.is_empty() {
                "/api/v1/sessions".to_string()
            } else {
                format!("/api/v1/sessions?{query}")
            };
            ("GET", path, None)
        }
        AdminCall::Revoke { who, sid, idp, all } => {
            let mut body = named(who, &[("sid", sid), ("idp", idp)]);
            if *all {
                body.insert("all".into(), json!(true));
            }
            ("POST", "/api/v1/revoke".into(), Some(Value::Object(body)))
        }
        AdminCall::Disable {
            who,
            app,
            until,
            reason,
        } => {
            let body = named(who, &[("app", app), ("until", until), ("reason", reason)]);
            ("POST", "/api/v1/disable".into(), Some(Value::Object(body)))
        }
        AdminCall::Enable { who, app } => {
            let body = named(who, &[("app", app)]);
            ("POST", "/api/v1/enable".into(), Some(Value::Object(body)))
        }
        AdminCall::Disabled => ("GET", "/api/v1/disabled".into(), None),
        AdminCall::Reload => ("POST", "/api/v1/reload".into(), None),
        AdminCall::Forget { user } => (
            "POST",
            "/api/v1/forget".into(),
            Some(json!({ "user": user })),
        ),
    }
}

async fn call(
    method: &str,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let http = openidconnect::reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = match method {
        "POST" => http.post(url),
        _ => http.get(url),
    }
    .bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

/// The answer for a person.
fn human(call: &AdminCall, value: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    match call {
        AdminCall::Sessions { .. } => {
            let sessions = value["sessions"].as_array().cloned().unwrap_or_default();
            let mut out = format!("{} live session(s)\n", sessions.len());
            for s in &sessions {
                out.push_str(&format!(
                    "{}  user {}  entity {}  idp {}  since {}  until {}  last seen {}\n",
                    text(&s["sid"]),
                    text(&s["user_id"]),
                    text(&s["entity"]),
                    text(&s["idp"]),
                    text(&s["issued_at"]),
                    text(&s["expires_at"]),
                    text(&s["last_seen"]),
                ));
            }
            out
        }
        AdminCall::Revoke { .. } => match value["revoked"].as_u64() {
            Some(n) => format!("revoked {n} session(s) on every replica\n"),
            None => "revoked (the session index could not be read to count them)\n".into(),
        },
        AdminCall::Disable { .. } => {
            let off = &value["disabled"];
            format!(
                "disabled {} until {}\n",
                key_of(off),
                off["until"].as_str().unwrap_or("enabled again")
            )
        }
        AdminCall::Enable { .. } => format!("enabled {}\n", text(&value["enabled"])),
        AdminCall::Forget { user } => format!(
            "forgotten: {user}'s sessions are revoked and their records in the audit trail can no longer be read\n"
        ),
        AdminCall::Reload => {
            let handover: Vec<&str> = value["needs_handover"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut out = format!("applied, sha256 {}\n", text(&value["config_sha256"]));
            if !handover.is_empty() {
                out.push_str(&format!(
                    "changed but applied only at the next upgrade: {}\n",
                    handover.join(", ")
                ));
            }
            out
        }
        AdminCall::Disabled => {
            let all = value["disabled"].as_array().cloned().unwrap_or_default();
            let mut out = format!("{} turned off\n", all.len());
            for off in &all {
                out.push_str(&format!(
                    "{}  until {}  by {}  at {}  reason {}\n",
                    key_of(off),
                    off["until"].as_str().unwrap_or("enabled again"),
                    text(&off["by"]),
                    text(&off["at"]),
                    text(&off["reason"]),
                ));
            }
            out
        }
    }
}

/// `user:alice`, `entity:acme`, `app:chat` of a switch's JSON.
fn key_of(switch: &Value) -> String {
    ["user", "entity", "app"]
        .iter()
        .find_map(|kind| switch[kind].as_str().map(|id| format!("{kind}:{id}")))
        .unwrap_or_else(|| "-".into())
}
