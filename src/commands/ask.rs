//! `persona ask`: one answer, or a chat loop, from the command line.
//!
//! Orchestrates the runtime for a person at a terminal: loads the persona once, keeps the
//! conversation (in memory, or per fan in the history store), prints replies, prompts and JSON.
//! The stages themselves are in `runtime`; the topic-filter stage will sit between `prepare` and
//! printing the reply.

use std::io::Write;

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde_json::json;

use crate::answer::prompt;
use crate::answer::{self, DemoMode, Generated, Persona, Prepared, Turn};
use crate::cli::AskArgs;
use crate::config::Config;
use crate::conversation::{FanProfile, Message};
use crate::filter::Verdict;
use crate::history::{self, HistoryStore};
use crate::llm::LlmClient;
use crate::paths::Assets;

/// Where the conversation lives during a session.
struct Session {
    store: Option<(HistoryStore, String)>,
    history: Vec<Message>,
    profile: Option<FanProfile>,
}

impl Session {
    fn open(args: &AskArgs) -> Result<Self> {
        let Some(fan) = &args.fan else {
            return Ok(Session {
                store: None,
                history: Vec::new(),
                profile: None,
            });
        };
        history::check_fan_id(fan)?;
        let path = args.history.clone().unwrap_or_else(HistoryStore::default_path);
        let store = HistoryStore::open(&path)?;
        let (history, profile) = store.load(fan)?;
        Ok(Session {
            store: Some((store, fan.clone())),
            history,
            profile,
        })
    }

    fn record(&mut self, message: Message) -> Result<()> {
        if let Some((store, fan)) = &mut self.store {
            store.append(fan, &message)?;
        }
        self.history.push(message);
        Ok(())
    }

    fn reset(&mut self) -> Result<()> {
        if let Some((store, fan)) = &mut self.store {
            store.reset(fan)?;
        }
        self.history.clear();
        Ok(())
    }
}

/// Runs `persona ask`.
pub fn run(config: &Config, args: &AskArgs) -> Result<()> {
    let process_started = std::time::Instant::now();
    if let Some(message) = &args.message {
        answer::check_message(message)?;
    }
    let fixed_now = args.now.as_deref().map(answer::parse_now).transpose()?;
    anyhow::ensure!(
        (1..=8).contains(&args.candidates),
        "--candidates must be between 1 and 8, got {}",
        args.candidates
    );
    if args.candidates > 1 && config.llm.temperature == 0.0 {
        anyhow::bail!("--candidates needs a temperature above 0, or every candidate is the same; pass --temperature 0.7");
    }
    if let Some(k) = args.k {
        anyhow::ensure!((1..=32).contains(&k), "--k must be between 1 and 32, got {k}");
    }
    let persona = Persona::load(
        &args.artifact,
        &Assets::locate(),
        config.embedding.effective_threads(),
    )?;
    let client = LlmClient::new(config.llm.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut session = Session::open(args)?;
    let k = args.k.unwrap_or(persona.artifact.settings.retrieval.k);

    let answer = |session: &mut Session,
                  persona: &Persona,
                  text: &str|
     -> Result<(Prepared, Option<Generated>)> {
        let now = fixed_now.unwrap_or_else(Timestamp::now);
        let fan_message = Message {
            from_creator: false,
            content: text.trim().to_string(),
            sent_at: Some(now),
        };
        let mut history = session.history.clone();
        history.push(fan_message.clone());
        let turn = Turn {
            history: &history,
            fan: session.profile.as_ref(),
            now,
            k,
            prefill: config.llm.prefill,
            demos: DemoMode::Nearest,
        };
        let prepared = persona.prepare(&turn)?;
        if args.dry_run {
            return Ok((prepared, None));
        }
        if args.show_prompt {
            eprintln!("{}", prompt::to_text(&prepared.messages));
            eprintln!(
                "filter on the fan's message: {}",
                describe(&prepared.input_verdict)
            );
        }
        // The fan's message is kept even if the model then fails: the fan did send it.
        session.record(fan_message)?;
        let generated = if args.candidates > 1 {
            let seed = config
                .llm
                .seed
                .unwrap_or_else(|| Timestamp::now().as_nanosecond() as u64);
            rt.block_on(persona.best_of(&client, &prepared, args.candidates, config.llm.temperature, seed))?
        } else {
            rt.block_on(persona.generate(&client, &prepared))?
        };
        if args.show_prompt {
            for (i, v) in generated.filter.output.iter().enumerate() {
                eprintln!("filter on draft {}: {}", i + 1, describe(v));
            }
            if generated.filter.fallback {
                eprintln!("every draft was blocked; replying with a deflection from the training data");
            }
        }
        let reply_at = fixed_now.unwrap_or_else(Timestamp::now);
        session.record(Message {
            from_creator: true,
            content: generated.reply.clone(),
            sent_at: Some(reply_at),
        })?;
        Ok((prepared, Some(generated)))
    };

    let mut out = std::io::stdout().lock();
    if let Some(message) = &args.message {
        let (prepared, generated) = answer(&mut session, &persona, message)?;
        print_answer(&mut out, args, &prepared, generated.as_ref())?;
        if crate::config::env("PERSONA_TIMINGS").is_some() {
            for (phase, took) in persona.timings() {
                eprintln!("timing {:<36} {:>8.1} ms", phase, took.as_secs_f64() * 1000.0);
            }
            eprintln!(
                "timing {:<36} {:>8.1} ms",
                "process start to answer",
                process_started.elapsed().as_secs_f64() * 1000.0
            );
        }
        return Ok(());
    }

    // The chat loop.
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let creator = persona.creator().to_string();
    eprintln!(
        "chatting as the fan with {creator}; /prompt shows the last prompt, /reset forgets, /quit leaves"
    );
    let mut last_prompt: Option<String> = None;
    loop {
        let line = match editor.readline("fan> ") {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Eof | rustyline::error::ReadlineError::Interrupted) => break,
            Err(e) => return Err(e).context("reading a line"),
        };
        let text = line.trim();
        match text {
            "" => continue,
            "/quit" | "/exit" => break,
            "/prompt" => {
                eprintln!("{}", last_prompt.as_deref().unwrap_or("(no prompt yet)"));
                continue;
            }
            "/reset" => {
                session.reset()?;
                eprintln!("(conversation forgotten)");
                continue;
            }
            _ => {}
        }
        let _ = editor.add_history_entry(text);
        if let Err(e) = answer::check_message(text) {
            eprintln!("error: {e:#}");
            continue;
        }
        match answer(&mut session, &persona, text) {
            Ok((prepared, generated)) => {
                last_prompt = Some(prompt::to_text(&prepared.messages));
                match &generated {
                    Some(g) if !args.json => writeln!(out, "{creator}> {}", g.reply)?,
                    _ => print_answer(&mut out, args, &prepared, generated.as_ref())?,
                }
                out.flush()?;
            }
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    Ok(())
}

fn print_answer(
    out: &mut impl Write,
    args: &AskArgs,
    prepared: &Prepared,
    generated: Option<&Generated>,
) -> Result<()> {
    if args.json {
        let mut value = json!({
            "reply": generated.map(|g| &g.reply),
            "demos": prepared.demos,
            "context": prepared.context,
            "attempts": generated.map_or(0, |g| g.filter.attempts),
            "calls": generated.map_or(0, |g| g.calls),
            "candidates": generated.map(|g| &g.candidates),
            "filter": match generated {
                Some(g) => json!(g.filter),
                None => json!({"input": prepared.input_verdict}),
            },
        });
        if args.dry_run || args.show_prompt {
            value["prompt"] = json!(prepared.messages);
        }
        serde_json::to_writer(&mut *out, &value)?;
        writeln!(out)?;
    } else if args.dry_run {
        writeln!(out, "demos (nearest last):")?;
        for d in &prepared.demos {
            writeln!(
                out,
                "  #{:<5} score {:.3}  [{}] {}",
                d.id, d.score, d.conversation, d.reply
            )?;
        }
        writeln!(
            out,
            "context:\n  {}",
            prepared.context.render().replace('\n', "\n  ")
        )?;
        writeln!(
            out,
            "filter on the fan's message: {}",
            describe(&prepared.input_verdict)
        )?;
        writeln!(out, "{}", prompt::to_text(&prepared.messages))?;
    } else if let Some(g) = generated {
        writeln!(out, "{}", g.reply)?;
    }
    Ok(())
}

fn describe(v: &Verdict) -> String {
    match &v.category {
        Some(c) if v.blocked => format!("blocked: {c} ({})", v.reason),
        _ => "clean".into(),
    }
}
