//! A real OpenID Provider (panva/oidc-provider on Node.js, `tests/idp/oidc/op.js`) on
//! 127.0.0.1, and a scripted browser that signs in through it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use reqwest::header::{COOKIE, LOCATION};

use super::browser::{cookie_header, cookies_of, form_action, start_sign_in, Jar};

pub struct Op {
    child: Child,
    pub issuer: String,
    /// Every line the OP printed after READY (REFRESH, BACKCHANNEL-OK, …).
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Op {
    /// Starts the OP for client `portcullis` (secret `op-client-secret`) with `env` settings
    /// (OP_AUTH_METHOD, OP_ACCESS_TTL, OP_BACKCHANNEL).
    pub fn start(redirect_uri: &str, env: &[(&str, &str)]) -> Op {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/idp/oidc");
        let mut command = Command::new("node");
        command
            .current_dir(dir)
            .args(["op.js", "portcullis", "op-client-secret", redirect_uri]);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node op.js (run `npm ci` in tests/idp/oidc)");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.starts_with("READY "))
            .expect("OP ready");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        // Keep reading: a closed pipe would kill the OP at its next log line.
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                sink.lock().expect("lines").push(l);
            }
        });
        Op {
            child,
            issuer: line["READY ".len()..].to_string(),
            lines: seen,
        }
    }

    /// How many lines equal `what` so far.
    pub fn count(&self, what: &str) -> usize {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|l| l.as_str() == what)
            .count()
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Follows a browser from `start` (a Portcullis URL that redirects to the OP) through the
/// OP's sign-in form as `user`, until the OP sends it back to `base`. Returns the callback
/// URL, Portcullis's cookies and the OP's cookies.
pub async fn sign_in_at_op(
    https: &reqwest::Client,
    op: &Op,
    base: &str,
    start: &str,
    user: &str,
    ours: &mut Jar,
    theirs: &mut Jar,
) -> String {
    let url = start_sign_in(https, start, ours).await;
    follow_op(op, base, url, user, theirs).await
}

/// Follows a browser from `url` (at the OP) through its sign-in form as `user` until the OP
/// sends it back to `base`; the callback URL.
pub async fn follow_op(
    op: &Op,
    base: &str,
    mut url: String,
    user: &str,
    theirs: &mut Jar,
) -> String {
    let plain = super::plain();
    for _ in 0..10 {
        if url.starts_with(base) {
            return url;
        }
        let absolute = if url.starts_with('/') {
            format!("{}{url}", op.issuer)
        } else {
            url.clone()
        };
        let r = plain
            .get(&absolute)
            .header(COOKIE, cookie_header(theirs))
            .send()
            .await
            .expect("op");
        cookies_of(r.headers(), theirs);
        if r.status().is_redirection() {
            url = r.headers()[LOCATION]
                .to_str()
                .expect("location")
                .to_string();
            continue;
        }
        let page = r.text().await.expect("page");
        let action = form_action(&page).expect("login form");
        let r = plain
            .post(format!("{}{action}", op.issuer))
            .header(COOKIE, cookie_header(theirs))
            .form(&[("username", user), ("password", "secret")])
            .send()
            .await
            .expect("op login");
        cookies_of(r.headers(), theirs);
        assert!(r.status().is_redirection(), "OP login: {}", r.status());
        url = r.headers()[LOCATION]
            .to_str()
            .expect("location")
            .to_string();
    }
    panic!("never came back from the OP");
}

/// Completes a sign-in at Portcullis's callback: its cookies (the session) land in `ours`;
/// the callback's status.
pub async fn finish(https: &reqwest::Client, callback: &str, ours: &mut Jar) -> u16 {
    let r = https
        .get(callback)
        .header(COOKIE, cookie_header(ours))
        .send()
        .await
        .expect("callback");
    cookies_of(r.headers(), ours);
    r.status().as_u16()
}

/// An access token from the OP at `issuer` by the client-credentials grant: `client` and
/// `secret` by HTTP Basic, `scope` (space-separated; empty: none asked) and, with `resource`
/// (`urn:…`), a JWT access token for that audience, without it an opaque one. Panics with the
/// OP's answer when it refuses.
pub async fn client_credentials(
    issuer: &str,
    client: &str,
    secret: &str,
    resource: Option<&str>,
    scope: &str,
) -> String {
    let http = super::plain();
    let discovered = match http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|d| d["token_endpoint"].as_str().map(str::to_string)),
        _ => None,
    };
    let token_endpoint = discovered.unwrap_or_else(|| format!("{issuer}/token"));
    let mut form = vec![("grant_type", "client_credentials")];
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    if let Some(resource) = resource {
        form.push(("resource", resource));
    }
    let r = http
        .post(&token_endpoint)
        .basic_auth(client, Some(secret))
        .form(&form)
        .send()
        .await
        .expect("OP token endpoint");
    let status = r.status();
    let body = r.text().await.expect("OP token answer");
    assert!(
        status.is_success(),
        "client_credentials for {client} at {token_endpoint}: {status} {body}"
    );
    let answer: serde_json::Value = serde_json::from_str(&body).expect("OP token JSON");
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token from the OP: {body}"))
        .to_string()
}

/// An RSA signing key the tests hand to the OP (`OP_RSA_JWK` = `jwk_path`) and keep, to sign
/// tokens the OP never issued with the OP's real key.
pub struct RsaTestKey {
    /// The private JWK as JSON (kty, n, e, d, p, q, dp, dq, qi, kid, alg RS256, use sig).
    pub jwk_path: std::path::PathBuf,
    /// The private key, PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub private_pem: Vec<u8>,
    /// The public key, SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).
    pub public_pem: Vec<u8>,
    /// The JWK's `kid`, which the OP puts in the header of every token it signs with it.
    pub kid: String,
}

/// A fresh 2048-bit RSA key `kid`, its private JWK written to `dir/<kid>.jwk.json`.
pub fn rsa_test_key(dir: &std::path::Path, kid: &str) -> RsaTestKey {
    use base64::Engine;
    let rsa = openssl::rsa::Rsa::generate(2048).expect("RSA key");
    let b64 = |n: &openssl::bn::BigNumRef| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n.to_vec())
    };
    let part = |n: Option<&openssl::bn::BigNumRef>, name: &str| {
        b64(n.unwrap_or_else(|| panic!("RSA key without {name}")))
    };
    let jwk = serde_json::json!({
        "kty": "RSA",
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
        "n": b64(rsa.n()),
        "e": b64(rsa.e()),
        "d": b64(rsa.d()),
        "p": part(rsa.p(), "p"),
        "q": part(rsa.q(), "q"),
        "dp": part(rsa.dmp1(), "dp"),
        "dq": part(rsa.dmq1(), "dq"),
        "qi": part(rsa.iqmp(), "qi"),
    });
    let jwk_path = dir.join(format!("{kid}.jwk.json"));
    std::fs::write(
        &jwk_path,
        serde_json::to_vec_pretty(&jwk).expect("JWK JSON"),
    )
    .expect("write JWK");
    let public_pem = rsa.public_key_to_pem().expect("public PEM");
    let private_pem = openssl::pkey::PKey::from_rsa(rsa)
        .expect("PKey")
        .private_key_to_pem_pkcs8()
        .expect("private PEM");
    RsaTestKey {
        jwk_path,
        private_pem,
        public_pem,
        kid: kid.to_string(),
    }
}
