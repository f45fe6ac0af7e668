use super::*;
use crate::audit::CheckpointSigner;

/// A chain of `n` records followed by a checkpoint, as the writer produces it.
fn chain(n: u64, signer: &CheckpointSigner) -> Vec<String> {
    let mut prev = GENESIS.to_string();
    let mut lines = Vec::new();
    for seq in 1..=n {
        let (line, hash) = seal(&format!("{{\"seq\":{seq},\"ts\":\"t\",\"event\":\"access\",\"path\":\"/p{seq}\",\"prev\":\"{prev}\"}}"));
        lines.push(line);
        prev = hash;
    }
    let seq = n + 1;
    let sig = signer.sign(checkpoint_message(seq, &prev).as_bytes());
    let (line, _) = seal(&format!(
        "{{\"seq\":{seq},\"ts\":\"t\",\"event\":\"checkpoint\",\"public_key\":\"{}\",\"signature\":\"{sig}\",\"prev\":\"{prev}\"}}",
        signer.public_key_base64()
    ));
    lines.push(line);
    lines
}

fn check(lines: &[String]) -> Result<Verified, ChainError> {
    verify(&lines.join("\n"), VerifyOptions::default())
}

#[test]
fn intact_chain_verifies() {
    let (signer, _) = CheckpointSigner::generate().expect("key");
    let v = check(&chain(5, &signer)).expect("valid");
    assert_eq!((v.records, v.checkpoints, v.unsealed_tail), (6, 1, 0));
}

#[test]
fn edits_deletions_reorders_and_truncation_are_found() {
    let (signer, _) = CheckpointSigner::generate().expect("key");
    let good = chain(5, &signer);

    let mut edited = good.clone();
    edited[2] = edited[2].replace("/p3", "/p9");
    assert_eq!(check(&edited), Err(ChainError::HashMismatch { line: 3 }));

    let mut deleted = good.clone();
    deleted.remove(2);
    assert_eq!(check(&deleted), Err(ChainError::BrokenLink { line: 3 }));

    let mut reordered = good.clone();
    reordered.swap(1, 2);
    assert_eq!(check(&reordered), Err(ChainError::BrokenLink { line: 2 }));

    let truncated = good[..4].to_vec();
    assert!(matches!(
        check(&truncated),
        Err(ChainError::UnsealedTail { records: 4, .. })
    ));
    let open = verify(
        &truncated.join("\n"),
        VerifyOptions {
            allow_open_tail: true,
            ..Default::default()
        },
    );
    assert_eq!(open.map(|v| v.unsealed_tail), Ok(4));

    let headless = good[1..].to_vec();
    assert_eq!(check(&headless), Err(ChainError::NotChainStart { seq: 2 }));
    assert!(verify(
        &headless.join("\n"),
        VerifyOptions {
            allow_continuation: true,
            ..Default::default()
        }
    )
    .is_ok());
}

#[test]
fn checkpoints_must_be_signed_by_the_pinned_key() {
    let (signer, _) = CheckpointSigner::generate().expect("key");
    let (other, _) = CheckpointSigner::generate().expect("key");
    let lines = chain(3, &signer);
    let pinned = |key: &CheckpointSigner| {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key.public_key_base64())
            .expect("b64");
        verify(
            &lines.join("\n"),
            VerifyOptions {
                trusted_key: Some(&raw),
                ..Default::default()
            },
        )
        .map(|v| v.checkpoints)
    };
    assert_eq!(pinned(&signer), Ok(1));
    assert_eq!(
        pinned(&other),
        Err(ChainError::BadSignature {
            line: 4,
            pinned: true
        })
    );
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    for text in [
        "",
        "not json",
        "{\"hash\":\"zz\"}",
        "{\"seq\":1},\"hash\":\"00\"}",
    ] {
        assert!(verify(text, VerifyOptions::default()).is_err(), "{text:?}");
    }
}
