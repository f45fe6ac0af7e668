//! libxmlsec's error reports go to `tracing` (debug, target `portcullis::saml::xmlsec`)
//! instead of the process's stderr.
//!
//! By default libxmlsec prints a `func=xmlSec…` line to stderr for every step of a failed
//! verification: about twenty unstructured lines per forged SAML response, which anyone on the
//! internet can make us write at will. The refusal itself is already recorded once, with its
//! reason, in the audit trail and the metrics; these details are for debugging.
//!
//! libxmlsec offers no Rust API for this and samael does not expose its bindings, so this
//! module declares the one C function it needs. It is the only `unsafe` code in the crate.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr};
use std::sync::Once;

/// `xmlSecErrorsCallback` (xmlsec/errors.h).
type ErrorsCallback = unsafe extern "C" fn(
    file: *const c_char,
    line: c_int,
    func: *const c_char,
    error_object: *const c_char,
    error_subject: *const c_char,
    reason: c_int,
    msg: *const c_char,
);

#[link(name = "xmlsec1")]
extern "C" {
    /// Replaces libxmlsec's process-wide error callback (a plain pointer store).
    fn xmlSecErrorsSetCallback(callback: Option<ErrorsCallback>);
}

/// A document signed (RSA-SHA256, exc-c14n, enveloped) by the key of [`SELF_TEST_CERT`],
/// made once with the `xmlsec1` command line; no private key is kept.
const SELF_TEST_XML: &str = include_str!("self_test/signed.xml");
const SELF_TEST_CERT: &[u8] = include_bytes!("self_test/cert.der");

/// Installs the callback once per process, before the first verification.
///
/// libxmlsec's OpenSSL back-end installs its own printing callback when samael initialises
/// the library, lazily, inside the first verification. So the library is initialised here
/// first, by verifying a known-good signed document (a self-test of the signature stack),
/// and the callback is installed after that.
pub fn route_to_tracing() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        use samael::crypto::{CertificateDer, Crypto, CryptoProvider, ReduceMode};
        let certificate = CertificateDer::from(SELF_TEST_CERT.to_vec());
        let verified = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            SELF_TEST_XML,
            &[certificate],
            ReduceMode::ValidateAndMarkNoAncestors,
            None,
        );
        if let Err(error) = verified {
            tracing::error!(%error, "the XML signature library failed its self-test: SAML sign-in will refuse every response");
        }
        // SAFETY: `xmlSecErrorsSetCallback` stores the pointer in a static; `report` matches
        // the C signature and is valid for the whole process. Called once, before any other
        // verification can run (they all call this function first and wait for it).
        unsafe { xmlSecErrorsSetCallback(Some(report)) }
    });
}

/// Text of a C string libxmlsec passes (may be null).
///
/// # Safety
/// `text` is null or a NUL-terminated string valid for the duration of the call.
unsafe fn text<'a>(text: *const c_char) -> std::borrow::Cow<'a, str> {
    if text.is_null() {
        std::borrow::Cow::Borrowed("")
    } else {
        // SAFETY: per the function contract.
        unsafe { CStr::from_ptr(text) }.to_string_lossy()
    }
}

/// Called by libxmlsec for each error it reports; must not unwind into C (tracing does not
/// panic).
unsafe extern "C" fn report(
    _file: *const c_char,
    _line: c_int,
    func: *const c_char,
    error_object: *const c_char,
    error_subject: *const c_char,
    reason: c_int,
    msg: *const c_char,
) {
    if !tracing::enabled!(target: "portcullis::saml::xmlsec", tracing::Level::DEBUG) {
        return;
    }
    // SAFETY: libxmlsec passes NUL-terminated strings (or null) valid during the callback.
    let (func, object, subject, message) = unsafe {
        (
            text(func),
            text(error_object),
            text(error_subject),
            text(msg),
        )
    };
    tracing::debug!(
        target: "portcullis::saml::xmlsec",
        { xmlsec.func = %func, xmlsec.object = %object, xmlsec.subject = %subject, xmlsec.reason = reason },
        "{message}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use samael::crypto::{CertificateDer, Crypto, CryptoProvider, ReduceMode};

    fn verify(xml: &str) -> bool {
        Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            xml,
            &[CertificateDer::from(SELF_TEST_CERT.to_vec())],
            ReduceMode::ValidateAndMarkNoAncestors,
            None,
        )
        .is_ok()
    }

    #[test]
    fn the_self_test_document_verifies_and_a_changed_one_does_not() {
        route_to_tracing();
        assert!(verify(SELF_TEST_XML));
        let changed = SELF_TEST_XML.replace("xmlsec self-test<", "xmlsec self-tesT<");
        assert_ne!(changed, SELF_TEST_XML);
        assert!(!verify(&changed));
    }
}
