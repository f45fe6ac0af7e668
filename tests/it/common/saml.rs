//! A real SAML 2.0 IdP (pysaml2, `tests/idp/saml/idp.py`) on 127.0.0.1, a scripted browser
//! that signs in through it, and `forge.py`, which bends a real signed response into the
//! negative cases.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use reqwest::header::COOKIE;

use super::browser::{form_action, form_value, start_sign_in, Jar};
use super::plain;

fn saml_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/idp/saml"))
}

/// The virtualenv's Python (made by scripts/test.sh from requirements.txt).
pub fn python() -> PathBuf {
    let venv = saml_dir().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh (or python3 -m venv tests/idp/saml/.venv && tests/idp/saml/.venv/bin/pip install -r tests/idp/saml/requirements.txt)",
        venv.display()
    );
    venv
}

pub struct SamlIdp {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Keys, metadata and forged files.
    pub workdir: tempfile::TempDir,
}

impl SamlIdp {
    /// Starts the IdP for an SP with these endpoints; `extra` adds flags such as
    /// `--sp-cert FILE` or `--sign-response`.
    pub fn start(sp_entity_id: &str, acs: &str, slo: &str, extra: &[&str]) -> SamlIdp {
        let workdir = tempfile::tempdir().expect("tempdir");
        let port = super::free_port().to_string();
        let mut child = Command::new(python())
            .arg(saml_dir().join("idp.py"))
            .args(["--port", &port, "--sp-entity-id", sp_entity_id])
            .args(["--sp-acs", acs, "--sp-slo", slo])
            .arg("--workdir")
            .arg(workdir.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start idp.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.starts_with("READY "))
            .expect("SAML IdP ready");
        // Keep draining stdout so the IdP never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        SamlIdp {
            child,
            base: ready["READY ".len()..].trim().to_string(),
            workdir,
        }
    }

    /// The IdP's metadata file (what an operator downloads).
    pub fn metadata_file(&self) -> PathBuf {
        self.workdir.path().join("idp-metadata.xml")
    }

    /// The IdP's entity id.
    pub fn entity_id(&self) -> String {
        format!("{}/metadata", self.base)
    }

    /// Runs `forge.py SHAPE` on a captured response XML; the forged XML.
    pub fn forge(&self, shape: &str, response_xml: &str) -> String {
        let input = self.workdir.path().join(format!("in-{shape}.xml"));
        let output = self.workdir.path().join(format!("out-{shape}.xml"));
        std::fs::write(&input, response_xml).expect("write");
        let out = Command::new(python())
            .arg(saml_dir().join("forge.py"))
            .arg(shape)
            .arg("--in")
            .arg(&input)
            .arg("--out")
            .arg(&output)
            .arg("--workdir")
            .arg(self.workdir.path())
            .output()
            .expect("forge.py");
        assert!(
            out.status.success(),
            "forge {shape}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&output).expect("forged")
    }
}

impl Drop for SamlIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the IdP's auto-submitting form carries to the ACS.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The form's action (the ACS URL).
    pub acs: String,
    /// `SAMLResponse`, base64 as posted.
    pub saml_response: String,
    /// `RelayState`.
    pub relay_state: Option<String>,
}

impl Posted {
    /// The response XML.
    pub fn xml(&self) -> String {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.saml_response)
            .expect("base64");
        String::from_utf8(bytes).expect("utf8")
    }

    /// The same post carrying another response XML.
    pub fn with_xml(&self, xml: &str) -> Posted {
        use base64::Engine;
        Posted {
            saml_response: base64::engine::general_purpose::STANDARD.encode(xml),
            ..self.clone()
        }
    }
}

/// A field of the IdP's form, unescaped.
fn form_field(page: &str, name: &str) -> Option<String> {
    form_value(page, name).map(|v| html_unescape(&v))
}

fn html_unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Reads the auto-submitting form the IdP returns after sign-in.
pub fn posted_form(page: &str) -> Posted {
    let acs = form_action(page)
        .map(|a| html_unescape(&a))
        .expect("form action");
    Posted {
        acs,
        saml_response: form_field(page, "SAMLResponse").expect("SAMLResponse in the form"),
        relay_state: form_field(page, "RelayState"),
    }
}

/// A browser at Portcullis's `start` URL: redirected to the IdP, signs in there as `user`,
/// and comes back with the IdP's form (not yet posted). Portcullis's cookies land in `ours`.
pub async fn sign_in_at_idp(
    https: &reqwest::Client,
    start: &str,
    user: &str,
    ours: &mut Jar,
) -> Posted {
    let to_idp = start_sign_in(https, start, ours).await;
    login_at_idp(&to_idp, user).await
}

/// Signs in at the IdP from its SSO URL; the form it answers with.
pub async fn login_at_idp(sso_url: &str, user: &str) -> Posted {
    let idp = plain();
    let r = idp.get(sso_url).send().await.expect("idp sso");
    let status = r.status();
    let base = sso_url.split("/sso").next().expect("idp base").to_string();
    let page = r.text().await.expect("login page");
    assert_eq!(status, 200, "IdP accepts the AuthnRequest: {page}");
    let ticket = form_field(&page, "ticket").expect("ticket in the login form");
    let r = idp
        .post(format!("{base}/login"))
        .form(&[
            ("username", user),
            ("password", "password"),
            ("ticket", &ticket),
        ])
        .send()
        .await
        .expect("idp login");
    let status = r.status();
    let page = r.text().await.expect("form");
    assert_eq!(status, 200, "IdP sign-in: {page}");
    posted_form(&page)
}

/// Posts `posted` to the ACS as the browser would (with `cookies`).
pub async fn post_acs(
    https: &reqwest::Client,
    posted: &Posted,
    cookies: &str,
) -> reqwest::Response {
    let mut form = vec![("SAMLResponse", posted.saml_response.as_str())];
    if let Some(relay) = &posted.relay_state {
        form.push(("RelayState", relay));
    }
    https
        .post(&posted.acs)
        .header(COOKIE, cookies)
        .header("origin", "null")
        .form(&form)
        .send()
        .await
        .expect("acs")
}

/// The XML of the `SAMLRequest` in a redirect-binding URL.
pub fn inflate_request(url: &str) -> String {
    use base64::Engine;
    use std::io::Read;
    let query = url.split_once('?').expect("query").1;
    let value = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "SAMLRequest")
        .expect("SAMLRequest")
        .1
        .into_owned();
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(value)
        .expect("base64");
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&deflated[..])
        .read_to_string(&mut xml)
        .expect("inflate");
    xml
}

/// Validates a metadata document against the OASIS SAML metadata schema.
pub fn validate_metadata(path: &Path) -> Result<(), String> {
    let out = Command::new(python())
        .arg(saml_dir().join("validate_metadata.py"))
        .arg(path)
        .output()
        .expect("validate_metadata.py");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
