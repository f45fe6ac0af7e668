use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::config::{SessionKey, UserType};
use crate::identity::AuthMethod;

const HOUR: Duration = Duration::from_secs(3600);

fn identity(roles: usize) -> Identity {
    Identity {
        user_id: "alice".into(),
        email: Some("alice@corp.test".into()),
        name: Some("Alice".into()),
        user_type: UserType::Internal,
        roles: (0..roles)
            .map(|i| format!("group-with-a-long-name-{i}"))
            .collect(),
        entity: Some("acme".into()),
        custom: BTreeMap::new(),
        idp: "local".into(),
        auth_method: AuthMethod::Local,
        mfa: false,
        client_id: None,
    }
}

fn codec(keys: &[[u8; 32]], deployment: &str) -> SessionCodec {
    let keys: Vec<SessionKey> = keys.iter().map(|k| SessionKey(*k)).collect();
    SessionCodec::new(&keys, "__Host-portcullis", deployment, 8, HOUR)
}

/// Builds the request-side `Cookie` header a browser would send back.
fn cookie_header(values: &[String]) -> String {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if i == 0 {
                format!("__Host-portcullis={v}")
            } else {
                format!("__Host-portcullis.{i}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn decode(codec: &SessionCodec, header: &str, now: u64) -> Result<SessionData, SessionError> {
    let jar = CookieJar::parse(std::iter::once(header), "__Host-portcullis");
    codec.decode(&jar, now)
}

#[test]
fn round_trip_small_and_chunked() {
    let codec = codec(&[[1; 32]], "https://chat.example.com");
    for roles in [0, 400] {
        let session = SessionData::new(identity(roles), 1000, 8 * HOUR);
        let values = codec.encode(&session).expect("encode");
        assert_eq!(values.len() > 1, roles > 0, "large sessions are chunked");
        for v in &values {
            assert!(v.len() <= CHUNK_LEN, "each cookie stays under 4 KB");
        }
        let header = format!("theme=dark; {}; other=1", cookie_header(&values));
        assert_eq!(decode(&codec, &header, 1001), Ok(session));
    }
}

#[test]
fn fresh_ids_and_nonces() {
    let codec = codec(&[[1; 32]], "d");
    let a = SessionData::new(identity(0), 0, HOUR);
    let b = SessionData::new(identity(0), 0, HOUR);
    assert_ne!(a.sid, b.sid);
    assert_ne!(
        codec.encode(&a).expect("a"),
        codec.encode(&a).expect("a again"),
        "random nonce per write"
    );
}

#[test]
fn key_rotation_keeps_old_sessions() {
    let old = codec(&[[1; 32]], "d");
    let rotated = codec(&[[2; 32], [1; 32]], "d");
    let session = SessionData::new(identity(0), 0, HOUR);
    let old_cookie = cookie_header(&old.encode(&session).expect("encode"));
    assert_eq!(
        decode(&rotated, &old_cookie, 1),
        Ok(session.clone()),
        "old key still decrypts"
    );
    let new_cookie = cookie_header(&rotated.encode(&session).expect("encode"));
    assert_eq!(
        decode(&old, &new_cookie, 1),
        Err(SessionError::UnknownKey),
        "new key encrypts"
    );
}

#[test]
fn other_deployments_and_tampering_are_refused() {
    let ours = codec(&[[1; 32]], "https://chat.example.com");
    let theirs = codec(&[[1; 32]], "https://other.example.com");
    let session = SessionData::new(identity(0), 0, HOUR);
    let values = ours.encode(&session).expect("encode");
    let header = cookie_header(&values);
    assert_eq!(
        decode(&theirs, &header, 1),
        Err(SessionError::DecryptFailed)
    );

    let mut tampered = values[0].clone().into_bytes();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("utf8");
    assert_eq!(
        decode(&ours, &cookie_header(&[tampered]), 1),
        Err(SessionError::DecryptFailed)
    );

    let truncated = values[0][..values[0].len() - 10].to_string();
    assert!(decode(&ours, &cookie_header(&[truncated]), 1).is_err());
    assert_eq!(
        decode(&ours, &header.replacen("1.", "2.", 1), 1),
        Err(SessionError::UnknownVersion)
    );
}

#[test]
fn missing_chunks_and_garbage_are_rejected_without_panic() {
    let codec = codec(&[[1; 32]], "d");
    let values = codec
        .encode(&SessionData::new(identity(400), 0, HOUR))
        .expect("encode");
    assert!(values.len() > 2);
    assert_eq!(
        decode(&codec, &cookie_header(&values[..values.len() - 1]), 1),
        Err(SessionError::Malformed)
    );
    assert_eq!(decode(&codec, "nothing=here", 1), Err(SessionError::Absent));
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..2000 {
        let len = rng.random_range(0..200);
        let junk: String = (0..len)
            .map(|_| char::from(rng.random_range(32u8..127)))
            .collect();
        let _ = decode(&codec, &format!("__Host-portcullis={junk}"), 1);
        let _ = decode(
            &codec,
            &format!("__Host-portcullis=1.3.{junk}; __Host-portcullis.1={junk}"),
            1,
        );
    }
    let oversized = format!(
        "__Host-portcullis=1.99999999999999999999.x.{}",
        "A".repeat(10_000)
    );
    assert_eq!(decode(&codec, &oversized, 1), Err(SessionError::Malformed));
}

#[test]
fn absolute_and_idle_expiry() {
    let codec = codec(&[[1; 32]], "d");
    let session = SessionData::new(identity(0), 1000, 2 * HOUR);
    let header = cookie_header(&codec.encode(&session).expect("encode"));
    assert!(decode(&codec, &header, 1000 + 3599).is_ok());
    assert_eq!(
        decode(&codec, &header, 1000 + 3601),
        Err(SessionError::Idle)
    );
    let mut active = session.clone();
    active.last_seen = 1000 + 7000;
    let header = cookie_header(&codec.encode(&active).expect("encode"));
    assert_eq!(
        decode(&codec, &header, 1000 + 7200),
        Err(SessionError::Expired)
    );
    assert!(!codec.needs_touch(&session, 1000 + 100));
    assert!(codec.needs_touch(&session, 1000 + 900));
}

#[test]
fn size_ceiling() {
    let keys = [SessionKey([1; 32])];
    let small = SessionCodec::new(&keys, "__Host-portcullis", "d", 2, HOUR);
    let err = small
        .encode(&SessionData::new(identity(2000), 0, HOUR))
        .expect_err("too large");
    assert!(matches!(err, EncodeError::TooLarge { max: 2, .. }));
}

#[test]
fn set_cookie_values_clear_leftover_chunks() {
    let set = cookie_values(
        "__Host-portcullis",
        &["a".into(), "b".into()],
        60,
        &[1, 2, 3],
    );
    assert_eq!(set.len(), 4);
    assert_eq!(
        set[0],
        "__Host-portcullis=a; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60"
    );
    assert!(set[1].starts_with("__Host-portcullis.1=b;"));
    assert!(set[2].starts_with("__Host-portcullis.2=;") && set[2].ends_with("Max-Age=0"));
    assert!(set[3].starts_with("__Host-portcullis.3=;"));
    let cleared = clear_cookies("__Host-portcullis", &[1]);
    assert!(cleared.iter().all(|c| c.ends_with("Max-Age=0")));
}
