//! One exchange at a time per (creator, fan), in arrival order.
//!
//! Two requests of one fan would otherwise both read the history without the other's message
//! and store fan1, fan2, reply1, reply2. Each (creator, fan) has a fair (FIFO) async lock; a
//! request holds it from loading the history to committing its exchange. Locks nobody holds or
//! waits for are forgotten as the table grows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// The fans' turns.
#[derive(Default)]
pub(super) struct FanTurns {
    inner: Mutex<Turns>,
}

#[derive(Default)]
struct Turns {
    locks: HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>,
    /// The table's size after the last sweep; the next comes when it has doubled.
    swept_at: usize,
}

/// A fan's turn; the next request of that fan starts when it is dropped.
pub(super) type Turn = OwnedMutexGuard<()>;

impl FanTurns {
    /// Waits for the fan's turn.
    pub(super) async fn enter(&self, creator: &str, fan: &str) -> Turn {
        let lock = {
            // A poisoned table only means a panic elsewhere while it was held; its data is a
            // plain map and stays usable.
            let mut turns = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if turns.locks.len() >= (2 * turns.swept_at).max(1024) {
                turns.locks.retain(|_, l| Arc::strong_count(l) > 1);
                turns.swept_at = turns.locks.len();
            }
            turns
                .locks
                .entry((creator.to_string(), fan.to_string()))
                .or_default()
                .clone()
        };
        lock.lock_owned().await
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|t| t.locks.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_fans_turns_run_in_order_and_other_fans_do_not_wait() {
        let turns = Arc::new(FanTurns::default());
        let first = turns.enter("Wren", "ana").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..3 {
            let (turns, order) = (turns.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _turn = turns.enter("Wren", "ana").await;
                order.lock().unwrap().push(i);
            }));
            // Let each waiter queue before the next.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let other = tokio::time::timeout(Duration::from_secs(1), turns.enter("Wren", "ben")).await;
        assert!(other.is_ok(), "another fan is not held up");
        let same_fan_other_creator =
            tokio::time::timeout(Duration::from_secs(1), turns.enter("Ivy", "ana")).await;
        assert!(
            same_fan_other_creator.is_ok(),
            "nor the same id talking to another creator"
        );
        assert!(
            order.lock().unwrap().is_empty(),
            "nobody ran during the first turn"
        );
        drop(first);
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2], "first come, first served");
    }

    #[tokio::test]
    async fn idle_fans_are_forgotten() {
        let turns = FanTurns::default();
        let held = turns.enter("Wren", "held").await;
        for i in 0..2100 {
            drop(turns.enter("Wren", &format!("fan{i}")).await);
        }
        assert!(turns.len() < 1100, "{} remembered", turns.len());
        drop(held);
    }
}
