use super::*;

fn removed(names: &[&str], connection: &[&str], trusted: bool) -> Vec<String> {
    let mut out = headers_to_remove(names.iter().copied(), connection, trusted, &[]);
    out.iter_mut().for_each(|n| *n = n.to_ascii_lowercase());
    out.sort();
    out
}

#[test]
fn identity_headers_under_every_spelling() {
    let names = [
        "X-Portcullis-User",
        "x_portcullis_user",
        "X-PORTCULLIS-ROLES",
        "x-portcullis-assertion",
        "X_Portcullis-Entity",
        "x-portcullisx",
        "accept",
    ];
    assert_eq!(
        removed(&names, &[], true),
        vec![
            "x-portcullis-assertion",
            "x-portcullis-roles",
            "x-portcullis-user",
            "x_portcullis-entity",
            "x_portcullis_user"
        ]
    );
}

#[test]
fn connection_cannot_strip_protected_headers() {
    let names = [
        "connection",
        "x-forwarded-for",
        "x-custom",
        "x-portcullis-assertion",
        "keep-alive",
    ];
    let got = removed(
        &names,
        &["x-portcullis-assertion, X-Forwarded-For, x-custom, host"],
        true,
    );
    // x-custom goes (named in Connection), x-forwarded-for stays for a trusted peer,
    // the identity header is removed for being an identity header, not because Connection named it.
    assert_eq!(
        got,
        vec![
            "connection",
            "keep-alive",
            "x-custom",
            "x-portcullis-assertion"
        ]
    );
}

#[test]
fn forwarding_headers_only_from_trusted_peers() {
    let names = ["X-Forwarded-For", "X-Request-Id", "X-Forwarded-Proto"];
    assert_eq!(removed(&names, &[], false).len(), 3);
    assert!(removed(&names, &[], true).is_empty());
}

#[test]
fn client_address_headers_under_every_spelling_unless_passed_from_a_trusted_proxy() {
    let names = [
        "True-Client-IP",
        "cf_connecting_ip",
        "CF-Connecting-IP",
        "X-REAL-IP",
        "x-client-ip",
        "X-Cluster-Client-Ip",
        "Fastly-Client-IP",
        "Forwarded",
        "accept",
    ];
    let all: Vec<String> = names[..8].iter().map(|n| n.to_ascii_lowercase()).collect();
    let mut all_sorted = all.clone();
    all_sorted.sort();
    assert_eq!(removed(&names, &[], false), all_sorted);
    assert_eq!(
        removed(&names, &[], true),
        all_sorted,
        "not listed: removed"
    );
    let passed = vec!["cf-connecting-ip".to_string()];
    let from_untrusted = headers_to_remove(names.iter().copied(), &[], false, &passed);
    assert_eq!(from_untrusted.len(), 8, "a client never passes them");
    let mut from_trusted: Vec<String> =
        headers_to_remove(names.iter().copied(), &[], true, &passed)
            .into_iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
    from_trusted.sort();
    // Only the exact name passes; `cf_connecting_ip` is not the listed header (a client
    // could add it behind the CDN).
    let expected: Vec<String> = all_sorted
        .iter()
        .filter(|n| n.as_str() != "cf-connecting-ip")
        .cloned()
        .collect();
    assert_eq!(from_trusted, expected);
}

#[test]
fn own_cookies_are_removed() {
    let prefix = "__Host-portcullis";
    assert_eq!(
        strip_own_cookies("a=1; __Host-portcullis=xyz; b=2", prefix).as_deref(),
        Some("a=1; b=2")
    );
    assert_eq!(
        strip_own_cookies("__Host-portcullis.1=x;__Host-portcullis-flow=y", prefix),
        None
    );
    assert_eq!(
        strip_own_cookies("theme=dark", prefix).as_deref(),
        Some("theme=dark")
    );
    assert!(sets_own_cookie("__Host-portcullis=evil; Path=/", prefix));
    assert!(!sets_own_cookie("session=ok", prefix));
}

#[test]
fn request_ids() {
    assert!(acceptable_request_id(b"0123456789abcdef"));
    assert!(!acceptable_request_id(b"short"));
    assert!(!acceptable_request_id(b"has space in it"));
    assert!(!acceptable_request_id(b"<script>alert(1)</script>"));
}
