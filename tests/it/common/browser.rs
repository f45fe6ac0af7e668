//! A scripted browser: a cookie jar, the fields of HTML forms, and the flows the sign-in tests
//! share (start a sign-in, sign a local user in, sign out with the CSRF token).

use std::collections::BTreeMap;

use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};

/// Portcullis's session cookie (the default `session.cookie_name`).
pub const SESSION_COOKIE: &str = "__Host-portcullis";
/// Portcullis's CSRF cookie (`<cookie_name>-csrf`), whose value the forms post back.
pub const CSRF_COOKIE: &str = "__Host-portcullis-csrf";

/// A cookie jar keyed by name; a cookie the server cleared maps to "".
pub type Jar = BTreeMap<String, String>;

/// Puts the cookies a response sets into `jar`.
pub fn cookies_of(headers: &HeaderMap, jar: &mut Jar) {
    for v in headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        if let Some((name, value)) = v.split(';').next().and_then(|p| p.split_once('=')) {
            jar.insert(name.trim().to_string(), value.to_string());
        }
    }
}

/// The `Cookie` header a browser sends with `jar` (cleared cookies left out).
pub fn cookie_header(jar: &Jar) -> String {
    jar.iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The value of cookie `name` as a response sets it ("" when it clears it).
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (n, rest) = v.split_once('=')?;
            (n == name).then(|| rest.split(';').next().unwrap_or_default().to_string())
        })
}

/// The value of the form field `name` in an HTML page, as written (not unescaped).
pub fn form_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    html[start..].split('"').next().map(str::to_string)
}

/// The action of the first form in an HTML page, as written (not unescaped).
pub fn form_action(html: &str) -> Option<String> {
    html.split("action=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(str::to_string)
}

/// Starts a sign-in as a browser does: GET `start` (a Portcullis login URL) with the cookies
/// in `jar`, which redirects to the provider. The flow's cookies land in `jar`; the
/// provider's URL.
pub async fn start_sign_in(https: &reqwest::Client, start: &str, jar: &mut Jar) -> String {
    let r = https
        .get(start)
        .header(COOKIE, cookie_header(jar))
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), 302, "{start} redirects to the provider");
    cookies_of(r.headers(), jar);
    r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string()
}

/// Signs a local user in at `base` through the sign-in form of provider `idp`: the page sets
/// the CSRF cookie, the form posts it back (returning to `/`). Each request carries
/// `headers`. The session's `Cookie` header.
pub async fn sign_in_local(
    https: &reqwest::Client,
    base: &str,
    idp: &str,
    user: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> String {
    let r = try_sign_in_local(https, base, idp, user, password, headers).await;
    assert_eq!(r.status(), 303, "{user} signs in");
    let session = set_cookie(r.headers(), SESSION_COOKIE).expect("session cookie");
    format!("{SESSION_COOKIE}={session}")
}

/// A local sign-in as a browser makes it (page, then form with its CSRF token); the answer
/// to the form, whatever it is.
pub async fn try_sign_in_local(
    https: &reqwest::Client,
    base: &str,
    idp: &str,
    user: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut page = https.get(format!("{base}/.portcullis/login"));
    for (name, value) in headers {
        page = page.header(*name, *value);
    }
    let page = page.send().await.expect("login page");
    assert_eq!(page.status(), 200, "{user}: sign-in page");
    let csrf = set_cookie(page.headers(), CSRF_COOKIE).expect("csrf cookie");
    let mut post = https.post(format!("{base}/.portcullis/login"));
    for (name, value) in headers {
        post = post.header(*name, *value);
    }
    post.header(COOKIE, format!("{CSRF_COOKIE}={csrf}"))
        .header("origin", base)
        .form(&[
            ("idp", idp),
            ("username", user),
            ("password", password),
            ("rd", "/"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .expect("login")
}

/// Signs out at `base` as a browser does: the confirmation page, then its form posted back
/// with the page's CSRF token (the CSRF cookie's value) and the cookies of `jar`. The page's
/// cookies land in `jar`; the answer to the post is returned with its cookies untaken (a test
/// may replay the old ones).
pub async fn sign_out(https: &reqwest::Client, base: &str, jar: &mut Jar) -> reqwest::Response {
    let page = https
        .get(format!("{base}/.portcullis/logout"))
        .header(COOKIE, cookie_header(jar))
        .header("accept", "text/html")
        .send()
        .await
        .expect("sign-out page");
    cookies_of(page.headers(), jar);
    let html = page.text().await.expect("html");
    let csrf = form_value(&html, "csrf").expect("csrf field in the sign-out form");
    assert_eq!(
        jar.get(CSRF_COOKIE),
        Some(&csrf),
        "the form carries the CSRF cookie's token"
    );
    https
        .post(format!("{base}/.portcullis/logout"))
        .header(COOKIE, cookie_header(jar))
        .header("origin", base)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("sign out")
}
