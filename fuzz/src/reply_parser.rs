//! Pulling the reply out of a model's answer, `answer::prompt::parse_reply`, over arbitrary text.
//!
//! The signature is the default one; the creator's name is the input's first line (so names with
//! markers, colons or nothing at all are tried too) and the answer the rest, which is also parsed
//! for the name `Wren`. A reply, when there is one, is non-empty, trimmed and part of the answer.

use std::sync::LazyLock;

use persona::answer::prompt::parse_reply;
use persona::answer::signature::Signature;

static SIGNATURE: LazyLock<Signature> = LazyLock::new(|| Signature::default().for_platform("OnlyFans"));

/// Parses the answer in `data` (not UTF-8: refused).
pub fn run(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let (creator, answer) = text.split_once('\n').unwrap_or(("Wren", text));
    for creator in [creator, "Wren"] {
        if let Some(reply) = parse_reply(answer, &SIGNATURE, creator) {
            assert!(!reply.is_empty() && reply == reply.trim(), "{reply:?}");
            assert!(
                answer.contains(&reply),
                "a reply that is not in the answer: {reply:?}"
            );
        }
    }
    Ok(())
}
