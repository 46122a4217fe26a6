//! `persona ask`: one answer, or a chat loop, from the command line.
//!
//! A thin caller of the answer pipeline for a person at a terminal: loads the persona once,
//! keeps the conversation (in memory, or per fan in the history store), and prints replies,
//! prompts and JSON. Building the turn, choosing demos, filtering and best-of-N are all in
//! [`crate::answer`].

use std::io::Write;

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::Serialize;

use crate::answer::{self, Answer, CleanReply, DemoMode, Persona, Prepared, Sampling, Turn};
use crate::cli::AskArgs;
use crate::config::Config;
use crate::conversation::{FanProfile, Message};
use crate::embed::Startup;
use crate::filter::Verdict;
use crate::history::{self, HistoryStore};
use crate::llm::{ChatMessage, LlmClient};
use crate::safety::Handoff;

/// Where the conversation lives during a session.
struct Session {
    /// The store, the creator and the fan id.
    store: Option<(HistoryStore, String, String)>,
    history: Vec<Message>,
    profile: Option<FanProfile>,
    /// The fan's open handoff that stops the bot, if any.
    handoff: Option<Handoff>,
}

impl Session {
    fn open(args: &AskArgs, configured: Option<&str>, creator: &str) -> Result<Self> {
        let Some(fan) = &args.fan else {
            return Ok(Session {
                store: None,
                history: Vec::new(),
                profile: None,
                handoff: None,
            });
        };
        history::check_fan_id(fan)?;
        let mut store = history::open(&history::Location::resolve(args.history.as_deref(), configured))?;
        let claimed = store.claim_unassigned(creator)?;
        if claimed > 0 {
            eprintln!("history: {claimed} fan(s) stored before histories were kept per creator now belong to {creator}");
        }
        let key = history::FanRef::new(creator, fan);
        let (history, profile) = store.load(key)?;
        let handoff = store.stopping_handoff(key)?;
        Ok(Session {
            store: Some((store, creator.to_string(), fan.clone())),
            history,
            profile,
            handoff,
        })
    }

    /// Keeps an exchange: in the store as one transaction, then in memory.
    fn record(
        &mut self,
        fan_message: Message,
        reply: &CleanReply,
        at: Timestamp,
        handoff: Option<&Handoff>,
    ) -> Result<()> {
        if let Some((store, creator, fan)) = &mut self.store {
            let exchange = history::Exchange {
                handoff,
                ..history::Exchange::new(&fan_message, reply, at)
            };
            store.record_exchange(history::FanRef::new(creator, fan), &exchange)?;
        }
        if let Some(h) = handoff.filter(|h| h.stop) {
            self.handoff = Some(h.clone());
        }
        let sent_at = fan_message.sent_at;
        self.history.push(fan_message);
        self.history.push(Message {
            from_creator: true,
            content: reply.as_str().to_string(),
            sent_at: Some(sent_at.map_or(at, |s| s.max(at))),
        });
        Ok(())
    }

    fn reset(&mut self) -> Result<()> {
        if let Some((store, creator, fan)) = &mut self.store {
            store.reset(history::FanRef::new(creator, fan))?;
        }
        self.history.clear();
        Ok(())
    }
}

/// What `ask` needs for every message of a session.
struct Asker<'a> {
    args: &'a AskArgs,
    persona: Persona,
    client: LlmClient,
    rt: tokio::runtime::Runtime,
    sampling: Sampling,
    prefill: bool,
    fixed_now: Option<Timestamp>,
}

impl Asker<'_> {
    fn now(&self) -> Timestamp {
        self.fixed_now.unwrap_or_else(Timestamp::now)
    }

    /// Answers one fan message: the prepared turn always, the answer unless `--dry-run`. The
    /// exchange is recorded only once the reply exists, so a failed call stores nothing.
    fn answer(&self, session: &mut Session, text: &str) -> Result<(Prepared, Option<Answer>)> {
        let fan_message = Message {
            from_creator: false,
            content: text.trim().to_string(),
            sent_at: Some(self.now()),
        };
        let mut history = session.history.clone();
        history.push(fan_message.clone());
        let turn = Turn {
            history: &history,
            fan: session.profile.as_ref(),
            now: self.now(),
            prefill: self.prefill,
            demos: DemoMode::Nearest,
            handoff: session.handoff.as_ref(),
        };
        let prepared = self.persona.prepare(&turn)?;
        if self.args.dry_run {
            return Ok((prepared, None));
        }
        if self.args.show_prompt {
            eprintln!("{}", answer::prompt::to_text(&prepared.messages));
            eprintln!(
                "filter on the fan's message: {}",
                describe(&prepared.input_verdict)
            );
        }
        let answer = self
            .rt
            .block_on(self.persona.answer(&self.client, &prepared, self.sampling))?;
        if self.args.show_prompt {
            for (i, v) in answer.filter.output.iter().enumerate() {
                eprintln!("filter on draft {}: {}", i + 1, describe(v));
            }
            if answer.filter.fallback {
                eprintln!("every draft was blocked; replying with a deflection from the training data");
            }
        }
        if let Some(h) = &answer.handoff {
            eprintln!(
                "handed off to a human: {} ({}){}",
                h.category,
                h.reason,
                if h.stop {
                    "; this fan gets only the handoff reply until `persona fans clear-handoff` is run"
                } else {
                    ""
                }
            );
        }
        session.record(fan_message, &answer.reply, self.now(), answer.handoff.as_ref())?;
        Ok((prepared, Some(answer)))
    }
}

/// Runs `persona ask`.
pub fn run(config: &Config, args: &AskArgs) -> Result<()> {
    let process_started = std::time::Instant::now();
    if let Some(message) = &args.message {
        answer::check_message(message)?;
    }
    let fixed_now = args.now.as_deref().map(answer::parse_now).transpose()?;
    let sampling = Sampling::new(args.candidates, config.llm.temperature, config.llm.seed)?;
    let asker = Asker {
        args,
        persona: Persona::open(&args.artifact, config, Startup::Quick)?,
        client: LlmClient::new(config.llm.clone())?,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?,
        sampling,
        prefill: config.llm.prefill,
        fixed_now,
    };
    let mut session = Session::open(
        args,
        config.history.location()?.as_deref(),
        asker.persona.creator(),
    )?;
    let mut out = std::io::stdout().lock();
    let Some(message) = &args.message else {
        return chat_loop(&asker, &mut session, &mut out);
    };
    let (prepared, answer) = asker.answer(&mut session, message)?;
    print_answer(&mut out, args, &prepared, answer.as_ref())?;
    if crate::config::env("PERSONA_TIMINGS").is_some() {
        for (phase, took) in asker.persona.timings() {
            eprintln!("timing {:<36} {:>8.1} ms", phase, took.as_secs_f64() * 1000.0);
        }
        let total = process_started.elapsed().as_secs_f64() * 1000.0;
        eprintln!("timing {:<36} {:>8.1} ms", "process start to answer", total);
    }
    Ok(())
}

/// The interactive loop: one fan message per line, with `/prompt`, `/reset` and `/quit`.
fn chat_loop(asker: &Asker<'_>, session: &mut Session, out: &mut impl Write) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let creator = asker.persona.creator().to_string();
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
        match asker.answer(session, text) {
            Ok((prepared, answer)) => {
                last_prompt = Some(answer::prompt::to_text(&prepared.messages));
                match &answer {
                    Some(a) if !asker.args.json => writeln!(out, "{creator}> {}", a.reply)?,
                    _ => print_answer(out, asker.args, &prepared, answer.as_ref())?,
                }
                out.flush()?;
            }
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    Ok(())
}

/// `ask --json`: the pipeline's [`Answer`], or for `--dry-run` what was prepared, plus the prompt
/// with `--dry-run` or `--show-prompt`.
#[derive(Serialize)]
#[serde(untagged)]
enum AskJson<'a> {
    Answered {
        #[serde(flatten)]
        answer: &'a Answer,
        #[serde(skip_serializing_if = "Option::is_none")]
        prompt: Option<&'a [ChatMessage]>,
    },
    Prepared {
        reply: Option<()>,
        demos: &'a [answer::DemoInfo],
        context: &'a answer::context::Facts,
        filter: InputOnly<'a>,
        prompt: &'a [ChatMessage],
        #[serde(skip_serializing_if = "Option::is_none")]
        handoff: Option<&'a crate::safety::Handoff>,
    },
}

#[derive(Serialize)]
struct InputOnly<'a> {
    input: &'a Verdict,
}

fn print_answer(
    out: &mut impl Write,
    args: &AskArgs,
    prepared: &Prepared,
    answer: Option<&Answer>,
) -> Result<()> {
    if args.json {
        let value = match answer {
            Some(answer) => AskJson::Answered {
                answer,
                prompt: args.show_prompt.then_some(prepared.messages.as_slice()),
            },
            None => AskJson::Prepared {
                reply: None,
                demos: &prepared.demos,
                context: &prepared.context,
                filter: InputOnly {
                    input: &prepared.input_verdict,
                },
                prompt: &prepared.messages,
                handoff: prepared.handoff.as_ref(),
            },
        };
        serde_json::to_writer(&mut *out, &value)?;
        writeln!(out)?;
    } else if let Some(a) = answer {
        writeln!(out, "{}", a.reply)?;
    } else {
        print_dry_run(out, prepared)?;
    }
    Ok(())
}

fn print_dry_run(out: &mut impl Write, prepared: &Prepared) -> Result<()> {
    if let Some(h) = &prepared.handoff {
        writeln!(
            out,
            "handoff: {} ({}); the reply is the category's fixed one, no model is asked",
            h.category, h.reason
        )?;
        return Ok(());
    }
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
    writeln!(out, "{}", answer::prompt::to_text(&prepared.messages))?;
    Ok(())
}

fn describe(v: &Verdict) -> String {
    match &v.category {
        Some(c) if v.blocked => format!("blocked: {c} ({})", v.reason),
        _ => "clean".into(),
    }
}
