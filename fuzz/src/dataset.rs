//! The training-data parser over arbitrary bytes.
//!
//! `parse` must return conversations or a `DatasetError` naming a place, never panic. On what
//! parses, what compile does next with it runs too: the example expansion (with the transcript
//! window) and the hold-out hash.

use persona::conversation::dataset;

/// Parses `data` as a dataset and expands its examples.
pub fn run(data: &[u8]) -> Result<(), String> {
    let conversations = match dataset::parse(data) {
        Ok(conversations) => conversations,
        Err(e) => {
            assert!(!e.place.is_empty(), "an error without a place: {e}");
            return Err(e.to_string());
        }
    };
    let held_out = |c: usize| dataset::is_held_out(&conversations[c], 0.2);
    let (examples, _) = dataset::examples(&conversations, 4, |c| !held_out(c));
    for e in examples {
        let messages = &conversations[e.conversation as usize].messages;
        assert!(e.turn > 0 && messages[e.turn as usize].from_creator);
    }
    Ok(())
}
