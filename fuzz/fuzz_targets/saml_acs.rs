//! The SAML assertion consumer service's input path: the posted `SAMLResponse` form value,
//! its decoding, and every check up to and including xmlsec's signature verification.
//! Run with `cargo +nightly fuzz run saml_acs` from the repository root (docs/operations.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::idp::saml::response::{decode, verify, Expectations};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Either the form value (base64) or, to reach the XML checks directly, the XML itself.
    let xml = decode(text).unwrap_or_else(|_| text.to_string());
    let never = |_: &str| false;
    let expect = Expectations {
        idp_entity_id: "https://idp.test/metadata",
        certificates: &[],
        sp_entity_id: "https://sp.test/.portcullis/saml/metadata",
        acs_url: "https://sp.test/.portcullis/saml/acs",
        request_id: Some("_req1"),
        allow_unsolicited: false,
        allow_sha1: false,
        clock_skew: 120,
        max_age: 300,
        now: 1_800_000_000,
        decrypter: None,
        consumed: &never,
    };
    // No certificate is trusted, so nothing may ever be accepted.
    assert!(verify(&xml, &expect).is_err());
});
