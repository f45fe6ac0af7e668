use super::*;

#[test]
fn table() {
    let cases = [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("//admin", "/admin"),
        ("/a//b///c", "/a/b/c"),
        ("/public/../admin", "/admin"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/%2E%2E/admin", "/admin"),
        ("/a/./b", "/a/b"),
        ("/../../etc", "/etc"),
        ("/..", "/"),
        ("/a/..", "/"),
        ("/a/b/..", "/a/"),
        ("/%61dmin", "/admin"),
        ("/a;b=c", "/a;b=c"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/~user", "/~user"),
        ("/%7euser", "/~user"),
    ];
    for (input, want) in cases {
        assert_eq!(normalize_path(input).as_deref(), Ok(want), "input {input}");
    }
}

#[test]
fn refusals() {
    assert_eq!(normalize_path("admin"), Err(PathError::NotAbsolute));
    assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
    assert_eq!(normalize_path("/a%zz"), Err(PathError::BadPercentEncoding));
    assert_eq!(normalize_path("/a%2"), Err(PathError::BadPercentEncoding));
    assert_eq!(normalize_path("/a%+1"), Err(PathError::BadPercentEncoding));
    assert_eq!(normalize_path("/a%00b"), Err(PathError::ControlCharacter));
    assert_eq!(normalize_path("/a%0ab"), Err(PathError::ControlCharacter));
    assert_eq!(normalize_path("/a\tb"), Err(PathError::ControlCharacter));
    assert_eq!(normalize_path("/a%2fb"), Err(PathError::AmbiguousSeparator));
    assert_eq!(
        normalize_path("/static/..%2Fadmin"),
        Err(PathError::AmbiguousSeparator)
    );
    assert_eq!(
        normalize_path("/a%5c..%5cb"),
        Err(PathError::AmbiguousSeparator)
    );
    assert_eq!(
        normalize_path("/a\\..\\b"),
        Err(PathError::AmbiguousSeparator)
    );
    assert_eq!(
        normalize_path("/static/..;/admin"),
        Err(PathError::DotSegmentParameters)
    );
    assert_eq!(
        normalize_path("/static/.;x/admin"),
        Err(PathError::DotSegmentParameters)
    );
    assert_eq!(
        normalize_path("/static/%2e%2e;/admin"),
        Err(PathError::DotSegmentParameters)
    );
}

/// Random paths built from the pieces attackers use: whatever comes out is already
/// normal (idempotent), has no dot segments or empty segments, and never panics.
#[test]
fn random_paths_normalise_to_a_fixed_point() {
    use rand::{Rng, SeedableRng};
    let pieces = [
        "/", "//", ".", "..", "%2e", "%2E%2e", "%2f", "%5c", "\\", "a", "%61", "~", "%7E", "%",
        "%0", "%zz", "%00", "é", "%C3%A9", "?", ";", "%25",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for _ in 0..20_000 {
        let mut path = String::from("/");
        for _ in 0..rng.random_range(0..12) {
            path.push_str(pieces[rng.random_range(0..pieces.len())]);
        }
        let Ok(normal) = normalize_path(&path) else {
            continue;
        };
        assert_eq!(
            normalize_path(&normal).as_deref(),
            Ok(normal.as_str()),
            "not idempotent for {path:?}"
        );
        assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
        let interior = normal.strip_suffix('/').unwrap_or(&normal);
        for segment in interior.split('/').skip(1) {
            assert!(
                !matches!(segment, "" | "." | ".."),
                "{path:?} -> {normal:?}"
            );
        }
    }
}
