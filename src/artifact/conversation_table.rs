//! The artifact's conversations as a table that decodes one conversation at a time.
//!
//! Each conversation is stored as its own JSON document, and an offsets array says where each one
//! starts, so opening an artifact with a million turns parses nothing: `ask` decodes only the k
//! conversations its demos come from. This module owns that encoding; what a conversation is
//! belongs to `dataset`.

use anyhow::{bail, Context, Result};

use crate::artifact::flat::{Flat, Lazy};
use crate::conversation::Conversation;

/// Conversations, each decoded on demand.
#[derive(Clone, Debug, PartialEq)]
pub struct ConversationTable {
    /// `len + 1` byte offsets into `bodies`, starting at 0.
    offsets: Flat<u64>,
    /// The conversations' JSON documents, back to back; a conversation's blocks are verified
    /// when it is decoded.
    bodies: Lazy<u8>,
}

impl ConversationTable {
    /// Encodes conversations.
    pub fn build(conversations: &[Conversation]) -> Result<Self> {
        let mut offsets = Vec::with_capacity(conversations.len() + 1);
        let mut bodies = Vec::new();
        offsets.push(0u64);
        for c in conversations {
            serde_json::to_writer(&mut bodies, c).context("encoding a conversation")?;
            offsets.push(bodies.len() as u64);
        }
        Ok(ConversationTable {
            offsets: Flat::owned(offsets),
            bodies: Lazy::verified(Flat::owned(bodies)),
        })
    }

    /// A table over stored parts, or an error saying what is inconsistent. Checks that the offsets
    /// start at 0, never decrease and end at the bodies' length, so `get` never reads outside.
    pub fn from_parts(offsets: Flat<u64>, bodies: Lazy<u8>) -> Result<Self> {
        if offsets.first() != Some(&0) {
            bail!("the conversation offsets do not start at 0");
        }
        if offsets.windows(2).any(|w| w[0] > w[1]) {
            bail!("the conversation offsets are out of order");
        }
        if offsets.last().copied() != Some(bodies.len() as u64) {
            bail!("the conversation offsets do not end where the conversations do");
        }
        Ok(ConversationTable { offsets, bodies })
    }

    /// Number of conversations.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Conversation `i`, decoded.
    pub fn get(&self, i: usize) -> Result<Conversation> {
        let rebuild = "rebuild the artifact with `persona compile`";
        let range = i
            .checked_add(1)
            .and_then(|next| Some((*self.offsets.get(i)?, *self.offsets.get(next)?)));
        let Some((start, end)) = range else {
            bail!(
                "the artifact has no conversation {i} (it has {}); {rebuild}",
                self.len()
            );
        };
        // `from_parts` checked the offsets, but a file overwritten in place under its reader
        // could still change them: never slice unchecked.
        let range = usize::try_from(start).ok().zip(usize::try_from(end).ok());
        let body = match range {
            Some((s, e)) => self.bodies.get(s..e)?,
            None => None,
        };
        let body = body.with_context(|| {
            format!("conversation {i} lies outside the artifact's conversations; {rebuild}")
        })?;
        serde_json::from_slice(body)
            .with_context(|| format!("decoding conversation {i} of the artifact; {rebuild}"))
    }

    /// The offsets, as stored.
    pub fn offsets(&self) -> &Flat<u64> {
        &self.offsets
    }

    /// The JSON documents, as stored.
    pub fn bodies(&self) -> &Lazy<u8> {
        &self.bodies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::Message;

    fn conversation(id: &str, texts: &[&str]) -> Conversation {
        Conversation {
            id: Some(id.into()),
            fan: None,
            messages: texts
                .iter()
                .enumerate()
                .map(|(i, t)| Message {
                    from_creator: i % 2 == 1,
                    content: (*t).into(),
                    sent_at: None,
                })
                .collect(),
        }
    }

    #[test]
    fn each_conversation_decodes_on_its_own() {
        let all = vec![
            conversation("a", &["hi", "hey you"]),
            conversation("b", &["rain again", "my favourite weather 🌧️", "same"]),
        ];
        let table = ConversationTable::build(&all).unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(1).unwrap(), all[1]);
        for (i, c) in all.iter().enumerate() {
            assert_eq!(&table.get(i).unwrap(), c);
        }
        assert!(table
            .get(2)
            .unwrap_err()
            .to_string()
            .contains("no conversation 2"));
        assert!(table.get(usize::MAX).is_err());
    }

    #[test]
    fn inconsistent_offsets_are_refused() {
        let bodies = || Lazy::verified(Flat::owned(b"{}{}".to_vec()));
        for (name, offsets) in [
            ("not from 0", vec![1u64, 4]),
            ("decreasing", vec![0, 3, 2, 4]),
            ("past the end", vec![0, 2, 9]),
            ("empty", vec![]),
        ] {
            assert!(
                ConversationTable::from_parts(Flat::owned(offsets), bodies()).is_err(),
                "{name}"
            );
        }
        assert!(ConversationTable::from_parts(Flat::owned(vec![0, 2, 4]), bodies()).is_ok());
    }
}
