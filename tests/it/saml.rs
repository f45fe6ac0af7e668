//! SAML 2.0 end to end against a real IdP (pysaml2, `tests/idp/saml/idp.py`): sign-in
//! reaches the upstream with the mapped identity and a verifiable assertion; every forged
//! response (built from a real signed one) is refused with its reason and never forwarded;
//! single logout both ways; MFA step-up; SP metadata valid against the OASIS schema.

use reqwest::header::{COOKIE, LOCATION};
use serde_json::Value;

use crate::common::browser::{cookie_header, cookies_of, sign_out, start_sign_in, Jar};
use crate::common::saml::{self, post_acs, sign_in_at_idp, Posted, SamlIdp};
use crate::common::upstream::received;
use crate::common::{audit_until, client, plain, Fixtures, Ports, Proxy, Upstream};

struct World {
    idp: SamlIdp,
    proxy: Proxy,
    fixtures: Fixtures,
    upstream: Upstream,
    https: reqwest::Client,
    base: String,
}

#[derive(Default)]
struct Options {
    /// Sign AuthnRequests and LogoutRequests (the IdP then requires it).
    sign_requests: bool,
    allow_unsolicited: bool,
    /// Read the IdP's metadata from its URL (fetched by the background service) instead of
    /// the downloaded file.
    metadata_by_url: bool,
    /// More flags for idp.py.
    idp_flags: Vec<&'static str>,
    /// More keys for the provider (each line indented by 4).
    provider_extra: &'static str,
}

fn openssl_pair(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (key, cert) = (dir.join("sp.key"), dir.join("sp.crt"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=portcullis-sp"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    (key, cert)
}

/// The IdP, and Portcullis with one app on a.test: internal (corp.test) and external users
/// with roles from groups, entity from the `organization` attribute, a `/billing` rule that
/// needs MFA, plain identity headers.
fn world(options: Options) -> World {
    let fixtures = Fixtures::new();
    let upstream = Upstream::start();
    let ports = Ports::new();
    let base = format!("https://a.test:{}", ports.https);
    let sp_entity = format!(
        "https://localhost:{}/.portcullis/saml/metadata",
        ports.https
    );
    let acs = format!("{base}/.portcullis/saml/acs");
    let slo = format!("https://localhost:{}/.portcullis/saml/slo", ports.https);
    let mut flags: Vec<&str> = options.idp_flags.clone();
    let mut sp_keys = String::new();
    let cert_arg;
    if options.sign_requests {
        let (key, cert) = openssl_pair(fixtures.dir.path());
        cert_arg = cert.display().to_string();
        flags.extend(["--sp-cert", cert_arg.as_str()]);
        sp_keys = format!(
            "    sp_signing_key: file:{}\n    sp_certificate: {}\n",
            key.display(),
            cert.display()
        );
    }
    let idp = SamlIdp::start(&sp_entity, &acs, &slo, &flags);
    let sections = format!(
        r#"identity_providers:
  - id: corp
    kind: saml
    display_name: Corp SSO (SAML)
    idp_metadata: {metadata}
    allow_unsolicited: {unsolicited}
{sp_keys}{extra}    claims: {{ entity: organization }}
identity:
  internal_users: [{{ email_domain: corp.test }}]
  roles:
    - {{ role: admin, group: admins }}
    - {{ role: engineer, group: engineering }}
    - {{ role: customer, group: acme-users }}
"#,
        metadata = if options.metadata_by_url {
            idp.entity_id() // the IdP serves its metadata at its entity id
        } else {
            idp.metadata_file().display().to_string()
        },
        unsolicited = options.allow_unsolicited,
        extra = options.provider_extra,
    );
    let up = upstream.url();
    let apps = format!(
        r#"  - id: chat
    hosts: [a.test]
    upstream: {up}
    access:
      user_types: [internal-user, external-user]
      roles: [admin, engineer, customer]
    rules:
      - name: billing
        paths: ["/billing/**"]
        access: {{ require_mfa: true }}
    identity_headers: {{ plain: true }}
"#
    );
    // libxmlsec's error reports are routed into tracing at debug (see the forged-response test).
    let yaml = fixtures
        .config(&ports, "", &apps)
        .replace(
            "level: warn",
            "level: \"warn,portcullis::saml::xmlsec=debug\"",
        )
        .replace("session:\n", &format!("{sections}session:\n"));
    let proxy = Proxy::start(&fixtures, ports, &yaml);
    let https = client(&fixtures, &proxy);
    World {
        idp,
        proxy,
        fixtures,
        upstream,
        https,
        base,
    }
}

impl World {
    fn start_url(&self, rd: &str) -> String {
        format!("{}/.portcullis/login?idp=corp&rd={rd}", self.base)
    }

    /// Signs `user` in; Portcullis's cookie jar with a session.
    async fn sign_in(&self, user: &str) -> Jar {
        let mut ours = Jar::new();
        let posted = sign_in_at_idp(&self.https, &self.start_url("%2Fchat"), user, &mut ours).await;
        let r = post_acs(&self.https, &posted, &cookie_header(&ours)).await;
        assert_eq!(r.status(), 303, "{user} signs in");
        assert_eq!(r.headers()[LOCATION], "/chat");
        cookies_of(r.headers(), &mut ours);
        ours
    }

    async fn get(&self, path: &str, jar: &Jar) -> reqwest::Response {
        self.https
            .get(format!("{}{path}", self.base))
            .header(COOKIE, cookie_header(jar))
            .header("accept", "application/json")
            .header("X-Portcullis-User", "forged-admin")
            .send()
            .await
            .expect("request")
    }

    /// Audit `detail` of every failed sign-in, in order, once there are `count` of them.
    async fn refusals(&self, count: usize) -> Vec<String> {
        crate::common::refusals(&self.fixtures.audit_log(), count).await
    }
}

fn verify_assertion(token: &str, jwks: &jsonwebtoken::jwk::JwkSet) -> Value {
    let header = jsonwebtoken::decode_header(token).expect("header");
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid in jwks");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&["chat"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("assertion verifies")
        .claims
}

#[tokio::test]
async fn sign_in_through_the_idp_reaches_the_upstream_with_the_mapped_identity() {
    let w = world(Options::default());
    let jwks: jsonwebtoken::jwk::JwkSet = w
        .https
        .get(format!("{}/.portcullis/jwks.json", w.base))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");

    // The only provider: the login page goes straight to the IdP (AuthnRequest by redirect);
    // after a failed sign-in it shows the page, which offers the SAML provider.
    let r = w
        .https
        .get(format!("{}/.portcullis/login?rd=%2Fchat", w.base))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 302);
    let location = r.headers()[LOCATION].to_str().expect("location");
    assert!(location.contains("SAMLRequest="), "{location}");
    let page = w
        .https
        .get(format!("{}/.portcullis/login?rd=%2Fchat&failed=1", w.base))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("text");
    assert!(page.contains("Corp SSO (SAML)"), "{page}");

    let alice = w.sign_in("alice@corp.test").await;
    let r = w.get("/chat", &alice).await;
    assert_eq!(r.status(), 200);
    let got = received(&r.json().await.expect("echo"));
    assert_eq!(got["x-portcullis-user"], "alice@corp.test");
    assert_eq!(got["x-portcullis-user-type"], "internal-user");
    let claims = verify_assertion(&got["x-portcullis-assertion"], &jwks);
    assert_eq!(claims["sub"], "alice@corp.test");
    assert_eq!(claims["email"], "alice@corp.test");
    assert_eq!(claims["name"], "Alice Example");
    assert_eq!(claims["idp"], "corp");
    let roles: Vec<&str> = claims["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        roles.contains(&"admin") && roles.contains(&"engineer"),
        "{roles:?}"
    );

    let bob = w.sign_in("bob@acme.test").await;
    let r = w.get("/chat", &bob).await;
    assert_eq!(r.status(), 200);
    let got = received(&r.json().await.expect("echo"));
    assert_eq!(got["x-portcullis-user-type"], "external-user");
    assert_eq!(got["x-portcullis-entity"], "acme");
    assert_eq!(got["x-portcullis-roles"], "customer");

    // No groups, no role: signed in, and refused by the policy.
    let nomail = w.sign_in("nomail@corp.test").await;
    assert_eq!(w.get("/chat", &nomail).await.status(), 403);

    let whoami: Value = w
        .https
        .get(format!("{}/.portcullis/whoami", w.base))
        .header(COOKIE, cookie_header(&alice))
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("json");
    assert_eq!(whoami["identity"]["auth_method"], "saml");
    assert!(!whoami.to_string().contains("SAMLResponse"));

    let logins = audit_until(&w.fixtures.audit_log(), 3, |r| {
        r["event"] == "login-succeeded"
    })
    .await;
    assert_eq!(logins.len(), 3);
    assert!(logins
        .iter()
        .all(|r| r["detail"] == "saml" && r["idp"] == "corp"));
}

#[tokio::test]
async fn every_forged_response_is_refused_with_its_reason_and_never_forwarded() {
    let w = world(Options::default());
    // One real sign-in, captured before it reaches Portcullis.
    let mut ours = Jar::new();
    let real = sign_in_at_idp(
        &w.https,
        &w.start_url("%2Fchat"),
        "alice@corp.test",
        &mut ours,
    )
    .await;
    let cookies = cookie_header(&ours);
    let xml = real.xml();
    let mut evil = Jar::new();
    let evil_real = sign_in_at_idp(
        &w.https,
        &w.start_url("%2Fchat"),
        "alice@corp.test.evil.test",
        &mut evil,
    )
    .await;

    let shapes: &[(&str, u16, &str)] = &[
        ("tamper", 403, "signature-invalid"),
        ("strip-signature", 403, "unsigned"),
        ("foreign-key", 403, "signature-invalid"),
        ("sha1", 403, "weak-algorithm"),
        ("xsw-clone-before", 403, "wrapped"),
        ("xsw-clone-after", 403, "wrapped"),
        ("xsw-extensions", 403, "wrapped"),
        ("xsw-object", 403, "wrapped"),
        ("xsw-same-id", 403, "wrapped"),
        ("expired", 403, "expired"),
        ("not-yet-valid", 403, "not-yet-valid"),
        ("audience", 403, "audience-mismatch"),
        ("recipient", 403, "recipient-mismatch"),
        ("destination", 403, "destination-mismatch"),
        ("in-response-to", 403, "in-response-to-mismatch"),
        ("issuer", 403, "issuer-mismatch"),
        ("status", 403, "idp-status"),
        ("unsolicited", 403, "unsolicited"),
        ("xxe", 403, "doctype-forbidden"),
        ("billion-laughs", 403, "doctype-forbidden"),
    ];
    let mut expected = Vec::new();
    for (shape, status, reason) in shapes {
        let forged = real.with_xml(&w.idp.forge(shape, &xml));
        let r = post_acs(&w.https, &forged, &cookies).await;
        assert_eq!(r.status().as_u16(), *status, "{shape}");
        assert!(
            r.headers().get("set-cookie").is_none_or(|c| {
                !c.to_str()
                    .unwrap_or_default()
                    .starts_with("__Host-portcullis=")
            }),
            "{shape}: no session"
        );
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"], "sign_in_refused", "{shape}");
        expected.push(reason.to_string());
    }

    // Comment injection: the signature still holds, the NameID would read as alice@corp.test.
    let injected = evil_real.with_xml(&w.idp.forge("comment-nameid", &evil_real.xml()));
    assert_eq!(
        post_acs(&w.https, &injected, &cookie_header(&evil))
            .await
            .status(),
        403
    );
    expected.push("comment-injected".into());

    // A RelayState that only shares the flow cookie's name finds no pending sign-in.
    let relay = real.relay_state.clone().expect("RelayState");
    let lookalike = Posted {
        relay_state: Some(format!("{}{}", &relay[..16], "f".repeat(relay.len() - 16))),
        ..real.clone()
    };
    assert_ne!(lookalike.relay_state.as_deref(), Some(relay.as_str()));
    assert_eq!(post_acs(&w.https, &lookalike, &cookies).await.status(), 403);
    expected.push("in-response-to-mismatch".into());

    // Not base64, and too large.
    let garbage = Posted {
        saml_response: "!!not base64!!".into(),
        ..real.clone()
    };
    assert_eq!(post_acs(&w.https, &garbage, &cookies).await.status(), 400);
    expected.push("not-base64".into());
    let huge = Posted {
        saml_response: "A".repeat(400 * 1024),
        ..real.clone()
    };
    assert_eq!(post_acs(&w.https, &huge, &cookies).await.status(), 413);
    expected.push("response-too-large".into());

    assert_eq!(w.upstream.hits(), 0, "nothing forged reached the upstream");
    assert_eq!(w.refusals(expected.len()).await, expected);

    // The real response still works once, and a replay of it (same cookie) does not.
    let r = post_acs(&w.https, &real, &cookies).await;
    assert_eq!(r.status(), 303, "the genuine response signs in");
    let r = post_acs(&w.https, &real, &cookies).await;
    assert_eq!(r.status(), 403);
    let refusals = w.refusals(expected.len() + 1).await;
    assert_eq!(refusals.last().map(String::as_str), Some("replayed"));
    assert_eq!(w.upstream.hits(), 0);

    // libxmlsec's complaints about the forgeries are structured tracing records (debug,
    // target portcullis::saml::xmlsec), never its raw `func=xmlSec…` lines on stderr.
    let mut w = w;
    let logs = w.proxy.logs();
    assert!(
        !logs.lines().any(|l| l.starts_with("func=xmlSec")),
        "{logs}"
    );
    assert!(logs.contains("portcullis::saml::xmlsec"), "{logs}");
}

#[tokio::test]
async fn idp_initiated_sign_in_only_where_allowed() {
    let w = world(Options {
        allow_unsolicited: true,
        ..Options::default()
    });
    let page = plain()
        .get(format!(
            "{}/sso/unsolicited?user=alice@corp.test&relay=/chat/x",
            w.idp.base
        ))
        .send()
        .await
        .expect("unsolicited")
        .text()
        .await
        .expect("page");
    let posted = saml::posted_form(&page);
    let r = post_acs(&w.https, &posted, "").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/chat/x");
    // A response that answers a request must come with that request's cookie.
    let mut ours = Jar::new();
    let solicited =
        sign_in_at_idp(&w.https, &w.start_url("%2F"), "alice@corp.test", &mut ours).await;
    assert_eq!(post_acs(&w.https, &solicited, "").await.status(), 403);
    assert_eq!(w.refusals(1).await, vec!["in-response-to-mismatch"]);
}

#[tokio::test]
async fn single_logout_both_ways_with_signed_requests() {
    let w = world(Options {
        sign_requests: true,
        metadata_by_url: true,
        ..Options::default()
    });
    // SP-initiated: Portcullis ends the session, then asks the IdP (signed LogoutRequest).
    let alice = w.sign_in("alice@corp.test").await;
    let r = sign_out(&w.https, &w.base, &mut alice.clone()).await;
    assert_eq!(r.status(), 303);
    let to_idp = r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    assert!(to_idp.starts_with(&format!("{}/slo/redirect?SAMLRequest=", w.idp.base)));
    assert!(to_idp.contains("&Signature="), "signed LogoutRequest");
    let back = plain().get(&to_idp).send().await.expect("idp slo");
    assert_eq!(
        back.status(),
        302,
        "the IdP verified our signature and answers"
    );
    let back = back.headers()[LOCATION]
        .to_str()
        .expect("location")
        .to_string();
    let back = back.replace(
        &format!("https://localhost:{}", w.proxy.ports.https),
        &w.base,
    );
    let r = w.https.get(&back).send().await.expect("slo response");
    assert_eq!(r.status(), 200);
    assert_eq!(w.get("/chat", &alice).await.status(), 401, "session over");

    // IdP-initiated: a signed LogoutRequest ends that session, even in another browser.
    let bob = w.sign_in("bob@acme.test").await;
    assert_eq!(w.get("/chat", &bob).await.status(), 200);
    let (url, _) = idp_logout(&w, "bob@acme.test", "unsigned=1").await;
    assert_eq!(w.https.get(&url).send().await.expect("slo").status(), 403);
    assert_eq!(
        w.get("/chat", &bob).await.status(),
        200,
        "an unsigned request ends nothing"
    );

    let (url, _) = idp_logout(&w, "bob@acme.test", "").await;
    let r = w.https.get(&url).send().await.expect("slo");
    assert_eq!(r.status(), 302, "answered with a LogoutResponse");
    assert!(r.headers()[LOCATION]
        .to_str()
        .expect("location")
        .starts_with(&format!("{}/slo/redirect?SAMLResponse=", w.idp.base)));
    assert_eq!(
        w.get("/chat", &bob).await.status(),
        401,
        "bob's session ended"
    );
    let again = w.https.get(&url).send().await.expect("slo replay");
    assert_eq!(again.status(), 403, "a captured LogoutRequest is good once");

    let details: Vec<String> = audit_until(&w.fixtures.audit_log(), 5, |r| {
        r["event"] == "logout" || r["event"] == "logout-refused"
    })
    .await
    .iter()
    .filter_map(|r| r["detail"].as_str().map(str::to_string))
    .collect();
    assert_eq!(
        details,
        vec![
            "user",
            "saml-slo-confirmed",
            "logout-unsigned",
            "saml-idp-logout",
            "logout-replayed"
        ]
    );
}

/// An IdP-initiated LogoutRequest for `user` from the test IdP: the URL and, over HTTP-POST,
/// the form to submit. Its host is rewritten to the app's (the IdP uses the public URL's).
async fn idp_logout(w: &World, user: &str, query: &str) -> (String, Option<String>) {
    let message: Value = plain()
        .post(format!("{}/__test/logout?{query}", w.idp.base))
        .json(&serde_json::json!({ "user": user }))
        .send()
        .await
        .expect("idp logout")
        .json()
        .await
        .expect("json");
    let url = message["url"].as_str().expect("url").replace(
        &format!("https://localhost:{}", w.proxy.ports.https),
        &w.base,
    );
    let form = message["form"]["SAMLRequest"].as_str().map(str::to_string);
    (url, form)
}

#[tokio::test]
async fn idp_initiated_logout_over_http_post_needs_a_valid_enveloped_signature() {
    let w = world(Options::default());
    let carol = w.sign_in("carol@corp.test").await;
    let post = |url: String, value: String| {
        let https = w.https.clone();
        async move {
            https
                .post(url)
                .form(&[("SAMLRequest", value.as_str())])
                .send()
                .await
                .expect("slo post")
        }
    };
    // Unsigned, then signed but changed after signing: refused, the session lives on.
    let (url, unsigned) = idp_logout(&w, "carol@corp.test", "binding=post&unsigned=1").await;
    assert_eq!(post(url, unsigned.expect("form")).await.status(), 403);
    let (url, signed) = idp_logout(&w, "carol@corp.test", "binding=post").await;
    let signed = signed.expect("form");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let xml = String::from_utf8(b64.decode(&signed).expect("base64")).expect("utf8");
    let tampered = b64.encode(xml.replace("carol@corp.test", "alice@corp.test"));
    assert_eq!(post(url.clone(), tampered).await.status(), 403);
    assert_eq!(w.get("/chat", &carol).await.status(), 200);

    let r = post(url, signed).await;
    assert_eq!(r.status(), 302, "answered with a LogoutResponse");
    assert_eq!(
        w.get("/chat", &carol).await.status(),
        401,
        "carol's session ended"
    );
    assert_eq!(
        w.refusals(2).await,
        vec!["logout-unsigned", "logout-signature-invalid"]
    );
}

#[tokio::test]
async fn mfa_rules_step_up_and_only_a_second_factor_passes() {
    let w = world(Options::default());
    let mut alice = w.sign_in("alice@corp.test").await;
    let r = w.get("/billing/invoices", &alice).await;
    assert_eq!(r.status(), 401, "MFA needed: a step-up sign-in");
    let body: Value = r.json().await.expect("json");
    let step_up = body["login_url"].as_str().expect("login_url").to_string();
    assert!(
        step_up.contains("idp=corp") && step_up.contains("mfa=1"),
        "{step_up}"
    );

    // The step-up AuthnRequest asks for the MFA contexts and a fresh authentication.
    let to_idp = start_sign_in(&w.https, &format!("{}{step_up}", w.base), &mut alice).await;
    let request = saml::inflate_request(&to_idp);
    assert!(
        request.contains("RequestedAuthnContext") && request.contains("MobileTwoFactorContract"),
        "{request}"
    );
    assert!(request.contains(r#"ForceAuthn="true""#), "{request}");

    // Alice has no second factor: the new session still does not pass, and is not sent round again.
    let posted = saml::login_at_idp(&to_idp, "alice@corp.test").await;
    let r = post_acs(&w.https, &posted, &cookie_header(&alice)).await;
    assert_eq!(r.status(), 303);
    cookies_of(r.headers(), &mut alice);
    assert_eq!(w.get("/billing/invoices", &alice).await.status(), 403);

    let carol = w.sign_in("carol@corp.test").await; // signs in with a second factor
    assert_eq!(w.get("/billing/invoices", &carol).await.status(), 200);
    assert_eq!(w.upstream.hits(), 1);
}

#[tokio::test]
async fn encrypted_assertions_decrypt_with_the_sp_key_and_3des_is_refused() {
    for (encryption, sign_response, signs_in) in [
        ("aes256-cbc", false, true),
        ("aes128-cbc", true, true), // the response signed over the encrypted assertion too
        ("3des", false, false),
    ] {
        let mut idp_flags = vec!["--encrypt-assertion", "--encryption", encryption];
        if sign_response {
            idp_flags.push("--sign-response");
        }
        let w = world(Options {
            sign_requests: true,
            idp_flags,
            ..Options::default()
        });
        let mut ours = Jar::new();
        let posted = sign_in_at_idp(
            &w.https,
            &w.start_url("%2Fchat"),
            "alice@corp.test",
            &mut ours,
        )
        .await;
        let xml = posted.xml();
        assert!(
            xml.contains("EncryptedAssertion") && !xml.contains("alice@corp.test"),
            "{encryption}: encrypted"
        );
        let r = post_acs(&w.https, &posted, &cookie_header(&ours)).await;
        if signs_in {
            assert_eq!(r.status(), 303, "{encryption}");
            cookies_of(r.headers(), &mut ours);
            let r = w.get("/chat", &ours).await;
            assert_eq!(r.status(), 200);
            let got = received(&r.json().await.expect("echo"));
            assert_eq!(got["x-portcullis-user"], "alice@corp.test");
        } else {
            assert_eq!(r.status(), 403, "{encryption}");
            assert_eq!(w.refusals(1).await, vec!["weak-algorithm"]);
            assert_eq!(w.upstream.hits(), 0);
        }
    }
}

#[tokio::test]
async fn sha1_signatures_pass_only_with_the_insecure_switch() {
    let w = world(Options {
        idp_flags: vec!["--sign-alg", "rsa-sha1", "--digest", "sha1"],
        provider_extra: "    insecure_allow_sha1: true\n",
        ..Options::default()
    });
    let alice = w.sign_in("alice@corp.test").await;
    assert_eq!(w.get("/chat", &alice).await.status(), 200);
    // Without the switch, the same IdP is refused (forged `sha1` shape in the test above).
}

#[tokio::test]
async fn sp_metadata_is_valid_against_the_saml_schema() {
    for sign_requests in [false, true] {
        let w = world(Options {
            sign_requests,
            ..Options::default()
        });
        let r = w
            .https
            .get(format!("{}/.portcullis/saml/metadata", w.base))
            .send()
            .await
            .expect("metadata");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/samlmetadata+xml");
        let text = r.text().await.expect("text");
        assert!(text.contains(&format!("{}/.portcullis/saml/acs", w.base)));
        assert_eq!(text.contains("X509Certificate"), sign_requests);
        assert!(text.contains(&format!("AuthnRequestsSigned=\"{sign_requests}\"")));
        let file = w.fixtures.path("sp-metadata.xml");
        std::fs::write(&file, &text).expect("write");
        if let Err(errors) = saml::validate_metadata(&file) {
            panic!("SP metadata is not schema-valid: {errors}\n{text}");
        }
    }
}
