//! `persona fans`: the fans in the history database, and clearing handoffs to a human.
//!
//! A thin caller of [`crate::history`]: `list` prints every fan (most recent first) with open
//! handoffs marked, `clear-handoff` closes a fan's handoffs so the persona answers them again.

use std::io::Write;

use anyhow::{bail, Result};
use jiff::Timestamp;

use crate::cli::{FansArgs, FansCommand};
use crate::history::{self, HistoryStore};

/// Runs `persona fans`.
pub fn run(args: &FansArgs) -> Result<()> {
    let path = args.history.clone().unwrap_or_else(HistoryStore::default_path);
    if !path.exists() {
        bail!(
            "no history database at `{}`; fans are stored by `persona ask --fan ID` and `persona serve` (pass --history FILE to use another)",
            path.display()
        );
    }
    let mut store = HistoryStore::open(&path)?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        FansCommand::List { handoff, json } => {
            let fans: Vec<_> = store
                .fans()?
                .into_iter()
                .filter(|f| !*handoff || !f.handoffs.is_empty())
                .collect();
            for f in &fans {
                if *json {
                    serde_json::to_writer(&mut out, f)?;
                    writeln!(out)?;
                    continue;
                }
                let marks: Vec<String> = f
                    .handoffs
                    .iter()
                    .map(|h| {
                        format!(
                            "HANDOFF {} since {}{}",
                            h.category,
                            h.at,
                            if h.stop { " (bot stopped)" } else { "" }
                        )
                    })
                    .collect();
                let last: String = f.last_message.as_deref().unwrap_or("").chars().take(60).collect();
                writeln!(
                    out,
                    "{}\t{} messages\t{}\t{}{}",
                    f.id,
                    f.messages,
                    f.last_at.as_deref().unwrap_or("-"),
                    last,
                    if marks.is_empty() {
                        String::new()
                    } else {
                        format!("\t{}", marks.join("; "))
                    }
                )?;
            }
            if fans.is_empty() && !*json {
                eprintln!(
                    "{}",
                    if *handoff {
                        "no open handoffs"
                    } else {
                        "no fans yet"
                    }
                );
            }
        }
        FansCommand::ClearHandoff { fan } => {
            history::check_fan_id(fan)?;
            match store.clear_handoff(fan, Timestamp::now())? {
                None => bail!(
                    "no fan with id `{fan}` in `{}`; `persona fans list --handoff` shows the fans waiting for a human",
                    path.display()
                ),
                Some(0) => eprintln!("fan `{fan}` has no open handoff; nothing to clear"),
                Some(n) => eprintln!("cleared {n} handoff(s) of fan `{fan}`; the persona answers them again"),
            }
        }
    }
    Ok(())
}
