//! `persona fans`: the fans in the history database, and clearing handoffs to a human.
//!
//! A thin caller of [`crate::history`]: `list` prints every fan (most recent first) with open
//! handoffs marked, `clear-handoff` closes a fan's handoffs so the persona answers them again.

use std::io::Write;

use anyhow::{bail, Result};
use jiff::Timestamp;

use crate::cli::{FansArgs, FansCommand};
use crate::config::Config;
use crate::history::{self, HistoryStore, Location};

/// Runs `persona fans`.
pub fn run(config: &Config, args: &FansArgs) -> Result<()> {
    let location = Location::resolve(args.history.as_deref(), config.history.location()?.as_deref());
    if let Location::File(path) = &location {
        if !path.exists() {
            bail!(
                "no history database at `{}`; fans are stored by `persona ask --fan ID` and `persona serve` (pass --history FILE|URL to use another)",
                path.display()
            );
        }
    }
    let mut store = history::open(&location)?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        FansCommand::List { handoff, json } => {
            let fans: Vec<_> = store
                .fans(args.creator.as_deref())?
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
                    "{}\t{}\t{} messages\t{}\t{}{}",
                    if f.creator.is_empty() { "-" } else { &f.creator },
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
            let creator = creator_of(&mut store, fan, args.creator.as_deref())?;
            match store.clear_handoff(history::FanRef::new(&creator, fan), Timestamp::now())? {
                None => bail!(
                    "no fan with id `{fan}` in `{location}`; `persona fans list --handoff` shows the fans waiting for a human"
                ),
                Some(0) => eprintln!("fan `{fan}` has no open handoff; nothing to clear"),
                Some(n) => eprintln!("cleared {n} handoff(s) of fan `{fan}`; the persona answers them again"),
            }
        }
    }
    Ok(())
}

/// The creator whose fan `fan` is meant: the one given, else the only creator with such a fan.
fn creator_of(store: &mut HistoryStore, fan: &str, given: Option<&str>) -> Result<String> {
    if let Some(creator) = given {
        return Ok(creator.to_string());
    }
    let creators: Vec<String> = store
        .fans(None)?
        .into_iter()
        .filter(|f| f.id == fan)
        .map(|f| f.creator)
        .collect();
    match creators.as_slice() {
        [] => bail!("no fan with id `{fan}`; `persona fans list` shows the fans and their creators"),
        [one] => Ok(one.clone()),
        many => bail!(
            "fan `{fan}` talks to several creators ({}); name one with --creator",
            many.join(", ")
        ),
    }
}
