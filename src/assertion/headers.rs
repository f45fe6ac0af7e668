//! The plain identity headers (`X-Portcullis-User`, `-Email`, …) injected upstream next to the
//! assertion, and the byte budget of all identity headers together.
//!
//! A value goes out verbatim or not at all: a cleaned-up value could name another user.

use super::claims::allowed_roles;
use crate::config::{App, UserType};
use crate::identity::Identity;

/// Name of the header that carries the signed assertion.
pub const ASSERTION_HEADER: &str = "X-Portcullis-Assertion";
/// Plain header: the user id.
pub const USER_HEADER: &str = "X-Portcullis-User";
/// Plain header: the e-mail address.
pub const EMAIL_HEADER: &str = "X-Portcullis-Email";
/// Plain header: `internal-user` or `external-user`.
pub const USER_TYPE_HEADER: &str = "X-Portcullis-User-Type";
/// Plain header: the allowed roles, comma-separated.
pub const ROLES_HEADER: &str = "X-Portcullis-Roles";
/// Plain header: the entity (tenant).
pub const ENTITY_HEADER: &str = "X-Portcullis-Entity";

/// Longest single plain header value, in bytes; a longer value is not sent at all.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Longest `X-Portcullis-Roles` value; the list ends at the last whole role that fits.
pub const MAX_ROLES_BYTES: usize = 4096;

/// The plain identity headers for `identity` on `app`; call only when
/// `app.identity_headers.plain` is on.
///
/// A value is sent exactly as it is or not at all: one that is empty, longer than
/// [`MAX_VALUE_BYTES`], has leading or trailing white space or contains a control character
/// (CR, LF, NUL, tab…) is left out, because a cleaned-up user id could equal another user's.
/// Roles are filtered by the app's allowlist; a role that fails the same test or contains a
/// comma (it would read as two roles) is left out, and the list stops at the last whole role
/// within [`MAX_ROLES_BYTES`]. The assertion always carries the exact values.
pub fn plain_headers(app: &App, identity: &Identity) -> Vec<(&'static str, String)> {
    let mut headers = Vec::with_capacity(5);
    let mut single = |name: &'static str, value: Option<&str>| {
        if let Some(value) = value.filter(|v| forwardable(v, MAX_VALUE_BYTES)) {
            headers.push((name, value.to_string()));
        } else if value.is_some() {
            tracing::debug!(
                header = name,
                "identity header value not forwardable; left out"
            );
        }
    };
    single(USER_HEADER, Some(&identity.user_id));
    single(EMAIL_HEADER, identity.email.as_deref());
    single(USER_TYPE_HEADER, Some(user_type_name(identity.user_type)));
    single(ENTITY_HEADER, identity.entity.as_deref());
    let roles = roles_value(allowed_roles(app, identity));
    if !roles.is_empty() {
        headers.push((ROLES_HEADER, roles));
    }
    headers
}

fn user_type_name(user_type: UserType) -> &'static str {
    match user_type {
        UserType::Internal => "internal-user",
        UserType::External => "external-user",
    }
}

/// Can `value` be a header value verbatim? (RFC 9110 §5.5: receivers trim surrounding white
/// space, and CR/LF/NUL would split or end the header.)
fn forwardable(value: &str, max_bytes: usize) -> bool {
    !value.is_empty()
        && value.len() <= max_bytes
        && value.trim() == value
        && !value.chars().any(char::is_control)
}

pub(super) fn roles_value<'a>(roles: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for role in roles.filter(|role| forwardable(role, MAX_ROLES_BYTES) && !role.contains(',')) {
        let separator = usize::from(!out.is_empty());
        if out.len() + separator + role.len() > MAX_ROLES_BYTES {
            tracing::debug!("X-Portcullis-Roles truncated at {MAX_ROLES_BYTES} bytes");
            break;
        }
        if separator == 1 {
            out.push(',');
        }
        out.push_str(role);
    }
    out
}

/// Bytes the identity headers add to the request, counted as on the HTTP/1.1 wire
/// (`name: value\r\n` per header).
pub fn header_bytes(assertion: &str, plain: &[(&str, String)]) -> usize {
    let line = |name: &str, value: &str| name.len() + value.len() + 4;
    plain
        .iter()
        .map(|(name, value)| line(name, value))
        .sum::<usize>()
        + line(ASSERTION_HEADER, assertion)
}

/// Whether the identity headers exceed the app's `identity_headers.budget_bytes`.
pub fn over_budget(app: &App, assertion: &str, plain: &[(&str, String)]) -> bool {
    header_bytes(assertion, plain) > app.identity_headers.budget_bytes
}
