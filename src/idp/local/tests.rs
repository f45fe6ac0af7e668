#[test]
fn unknown_users_are_checked_against_the_costliest_configured_hash() {
    let cheap = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcA";
    let default = "$argon2id$v=19$m=19456,t=2,p=1$CgTZcYL4qoVLFfhK0rk1ZA$m6MRTZQe7LFRDqATt5zykLNQXrE9ojJ+aCIvdQ1auXA";
    assert!(argon2_cost(default) > argon2_cost(cheap));
    assert_eq!(argon2_cost("not a hash"), 0);
}

use super::*;
use crate::config::{decode_base32, is_argon2id_hash, TotpSecret, UserType};

#[test]
fn rfc6238_vectors() {
    // RFC 6238 Appendix B, SHA-1 secret "12345678901234567890" (8-digit codes there; the
    // last 6 digits are the 6-digit code).
    let secret = b"12345678901234567890";
    for (time, eight_digits) in [
        (59u64, "94287082"),
        (1_111_111_109, "07081804"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
    ] {
        assert_eq!(totp_at(secret, time / 30), eight_digits[2..], "t={time}");
    }
    assert!(verify_totp(secret, "287082", 59));
    assert!(verify_totp(secret, "287082", 59 + 30), "one step of skew");
    assert!(!verify_totp(secret, "287082", 59 + 90));
    assert!(!verify_totp(secret, "28708", 59));
    assert!(!verify_totp(secret, "abcdef", 59));
}

#[test]
fn base32() {
    assert_eq!(
        decode_base32("JBSWY3DPEHPK3PXP").as_deref(),
        Some(&b"Hello!\xde\xad\xbe\xef"[..])
    );
    assert_eq!(decode_base32("jbsw y3dp").as_deref(), Some(&b"Hello"[..]));
    assert_eq!(
        decode_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").as_deref(),
        Some(&b"12345678901234567890"[..])
    );
    assert!(decode_base32("not base32!").is_none());
}

fn provider(totp: bool) -> LocalProvider {
    let user = LocalUser {
        username: "alice".into(),
        password_hash: hash_password("correct horse").expect("hash"),
        email: Some("alice@corp.test".into()),
        name: None,
        user_type: UserType::Internal,
        roles: vec!["admin".into()],
        entity: None,
        totp_secret: totp.then(|| TotpSecret(b"12345678901234567890".to_vec())),
    };
    let config = IdentityProvider {
        id: "staff".into(),
        display_name: "Staff".into(),
        kind: IdentityProviderKind::Local { users: vec![user] },
        claims: Default::default(),
    };
    LocalProvider::new(&config, Default::default()).expect("local")
}

#[test]
fn passwords_and_second_factor() {
    let p = provider(false);
    let identity = p.login("alice", "correct horse", None, 0).expect("login");
    assert_eq!(
        (
            identity.user_id.as_str(),
            identity.idp.as_str(),
            identity.mfa
        ),
        ("alice", "staff", false)
    );
    assert_eq!(
        p.login("alice", "wrong", None, 0),
        Err(LocalLoginError::BadCredentials)
    );
    assert_eq!(
        p.login("mallory", "correct horse", None, 0),
        Err(LocalLoginError::BadCredentials)
    );

    let p = provider(true);
    assert_eq!(
        p.login("alice", "correct horse", None, 59),
        Err(LocalLoginError::BadSecondFactor)
    );
    assert_eq!(
        p.login("alice", "correct horse", Some("000000"), 59),
        Err(LocalLoginError::BadSecondFactor)
    );
    let identity = p
        .login("alice", "correct horse", Some("287082"), 59)
        .expect("with code");
    assert!(identity.mfa);
}

#[test]
fn unknown_users_cost_the_same_work() {
    let p = provider(false);
    // Interleaved tries, fastest of each, so other work on the machine does not decide
    // the outcome; an unknown user skipping Argon2 would be ~1000x faster, not within 3x.
    let once = |user: &str| {
        let start = std::time::Instant::now();
        let _ = p.login(user, "wrong", None, 0);
        start.elapsed()
    };
    let (mut known, mut unknown) = (std::time::Duration::MAX, std::time::Duration::MAX);
    for _ in 0..6 {
        known = known.min(once("alice"));
        unknown = unknown.min(once("nobody"));
    }
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    assert!(
        (0.33..3.0).contains(&ratio),
        "known {known:?} vs unknown {unknown:?}"
    );
}

#[test]
fn only_argon2id_hashes() {
    assert!(is_argon2id_hash(&hash_password("x").expect("hash")));
    assert!(!is_argon2id_hash("$2b$12$abcdefghijklmnopqrstuv"));
    assert!(!is_argon2id_hash("plain"));
}
