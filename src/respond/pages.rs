//! Portcullis's own HTML pages: sign-in, sign-out confirmation, signed out. Self-contained
//! (no external assets, no scripts), every dynamic value HTML-escaped.

use super::escape_markup;

/// What the sign-in page shows.
pub struct LoginPage<'a> {
    /// Form action (the login endpoint).
    pub action: &'a str,
    /// Where to go after login (already validated).
    pub return_to: &'a str,
    /// CSRF token (also in a cookie).
    pub csrf_token: &'a str,
    /// Local providers: (id, display name).
    pub local: Vec<(&'a str, &'a str)>,
    /// Single sign-on providers: (display name, sign-in link).
    pub sso: Vec<(&'a str, String)>,
    /// Providers whose sign-in flow this build does not offer yet: display names.
    pub unavailable: Vec<&'a str>,
    /// A generic error to show ("Sign-in failed"), never which part was wrong.
    pub error: Option<&'a str>,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem;color:#222}\
form{border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}label{display:block;margin:.6rem 0 .2rem}\
input{width:100%;padding:.5rem;box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1rem}\
.error{color:#a00}.muted{color:#777}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><style>{STYLE}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    )
}

/// The sign-in page.
pub fn login_page(p: &LoginPage<'_>) -> String {
    let mut body = String::new();
    if let Some(error) = p.error {
        body.push_str(&format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape_markup(error)
        ));
    }
    for (name, href) in &p.sso {
        body.push_str(&format!(
            "<p><a class=\"sso\" href=\"{}\">Sign in with {}</a></p>",
            escape_markup(href),
            escape_markup(name)
        ));
    }
    for (id, name) in &p.local {
        body.push_str(&format!(
            "<form method=\"post\" action=\"{action}\"><h2>{name}</h2>\
             <input type=\"hidden\" name=\"idp\" value=\"{id}\"><input type=\"hidden\" name=\"rd\" value=\"{rd}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"u-{id}\">Username</label><input id=\"u-{id}\" name=\"username\" autocomplete=\"username\" required>\
             <label for=\"p-{id}\">Password</label><input id=\"p-{id}\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <label for=\"c-{id}\">One-time code <span class=\"muted\">(if enabled for you)</span></label>\
             <input id=\"c-{id}\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\">\
             <button type=\"submit\">Sign in</button></form>",
            action = escape_markup(p.action),
            name = escape_markup(name),
            id = escape_markup(id),
            rd = escape_markup(p.return_to),
            csrf = escape_markup(p.csrf_token),
        ));
    }
    for name in &p.unavailable {
        body.push_str(&format!(
            "<p class=\"muted\">{}: temporarily unavailable (the identity provider could not be reached; try again shortly).</p>",
            escape_markup(name)
        ));
    }
    if p.local.is_empty() && p.sso.is_empty() && p.unavailable.is_empty() {
        body.push_str("<p>No sign-in method is configured.</p>");
    }
    page("Sign in", &body)
}

/// Confirmation before signing out (a GET never changes state).
pub fn logout_page(action: &str, csrf_token: &str) -> String {
    page(
        "Sign out",
        &format!(
            "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <p>Sign out of this site?</p><button type=\"submit\">Sign out</button></form>",
            escape_markup(action),
            escape_markup(csrf_token)
        ),
    )
}

/// After signing out.
pub fn signed_out_page(login_url: &str) -> String {
    page(
        "Signed out",
        &format!(
            "<p>You are signed out.</p><p><a href=\"{}\">Sign in again</a></p>",
            escape_markup(login_url)
        ),
    )
}
