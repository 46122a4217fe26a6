//! `persona ask` end to end through the real binary, against the real local LLM server
//! (`scripts/llm.sh start`; `scripts/test.sh` starts it). Tests that need the LLM fail, not
//! skip, when it is down.

mod common;

use common::json;

use common::{llm_url, persona, shared_artifact};

fn ask(extra: &[&str]) -> common::Run {
    let artifact = shared_artifact().to_str().unwrap().to_string();
    let url = llm_url();
    let mut args = vec![
        "ask",
        "--artifact",
        &artifact,
        "--llm-url",
        &url,
        "--timeout",
        "300",
        "--seed",
        "7",
    ];
    args.extend_from_slice(extra);
    persona(&args)
}

#[test]
fn one_shot_answer_from_the_local_llm() {
    let out = json(&ask(&["--json", "heyy what are you up to tonight?"]).success());
    let reply = out["reply"].as_str().unwrap();
    assert!(!reply.trim().is_empty(), "{out}");
    assert!(!reply.contains("[[ ##"), "markers are parsed out: {reply}");
    assert_eq!(out["demos"].as_array().unwrap().len(), 3, "{out}");
    assert!(out["filter"]["attempts"].as_u64().unwrap() >= 1, "{out}");
    assert!(out["calls"].as_u64().unwrap() >= 1, "{out}");
    let scores: Vec<f64> = out["demos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] <= w[1]),
        "demos are ordered nearest last: {scores:?}"
    );
}

#[test]
fn a_fan_session_remembers_the_first_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite3");
    let db = db.to_str().unwrap();
    let first = json(
        &ask(&[
            "--fan",
            "mike",
            "--history",
            db,
            "--now",
            "2026-11-20T21:00:00-05:00",
            "--json",
            "hi wren, mike here from ohio. i grow tomatoes",
        ])
        .success(),
    );
    let first_reply = first["reply"].as_str().unwrap().to_string();

    let second = json(
        &ask(&[
            "--fan",
            "mike",
            "--history",
            db,
            "--now",
            "2026-11-23T21:00:00-05:00",
            "--dry-run",
            "--json",
            "remember me?",
        ])
        .success(),
    );
    assert_eq!(second["context"]["messages"], 3, "{second}");
    assert_eq!(
        second["context"]["returning_after_seconds"],
        3 * 86_400,
        "{second}"
    );
    let prompt = second["prompt"].as_array().unwrap();
    let last = prompt.iter().rev().find(|m| m["role"] == "user").unwrap()["content"]
        .as_str()
        .unwrap();
    assert!(last.contains("THE FAN: hi wren, mike here from ohio"), "{last}");
    let flat_reply = first_reply.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        last.contains(&format!("YOU: {flat_reply}")),
        "the first reply is in the history: {last}"
    );

    // Another fan's session does not see mike's messages.
    let other = json(&ask(&["--fan", "ana", "--history", db, "--dry-run", "--json", "hello"]).success());
    assert_eq!(other["context"]["messages"], 1);
}

#[test]
fn dry_run_shows_context_facts_for_a_fixed_now() {
    let out = json(
        &ask(&[
            "--dry-run",
            "--json",
            "--now",
            "2026-11-28T23:40:00-05:00",
            "can't sleep",
        ])
        .success(),
    );
    let context = &out["context"];
    assert_eq!(context["local_time"], "Saturday 2026-11-28 23:40", "{context}");
    assert_eq!(context["part_of_day"], "night");
    assert_eq!(context["timezone"], "America/New_York");
    assert_eq!(context["messages"], 1);
    assert!(out["reply"].is_null(), "dry run calls no LLM");
    let text = ask(&["--dry-run", "--now", "2026-11-28T23:40:00-05:00", "can't sleep"]).success();
    assert!(
        text.contains("demos (nearest last):") && text.contains("your local time: Saturday 2026-11-28 23:40"),
        "{text}"
    );
}

#[test]
fn the_chat_loop_answers_shows_the_prompt_and_quits() {
    let out = ask(&[]).stdin("hi wren!\n/prompt\n/quit\n").output();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Wren> "), "{stdout}");
    assert!(
        stderr.contains("THE FAN: hi wren!"),
        "/prompt shows the last prompt: {stderr}"
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let big = "a".repeat(100_000);
    // (case, extra args, text the error must contain)
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("empty message", vec!["   "], "empty"),
        ("huge message", vec![big.as_str()], "over the cap"),
        (
            "invalid --now",
            vec!["--now", "tomorrow-ish", "hi"],
            "invalid --now `tomorrow-ish`",
        ),
        ("bad k", vec!["--k", "0", "hi"], "--k"),
    ];
    for (name, extra, expected) in cases {
        let err = ask(&extra).failure();
        assert!(err.contains(expected), "{name}: {err}");
    }
}

#[test]
fn a_damaged_artifact_or_a_dead_llm_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.bin");
    let mut bytes = std::fs::read(shared_artifact()).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let err = persona(&["ask", "--artifact", damaged.to_str().unwrap(), "hi"]).failure();
    assert!(
        err.contains("checksum") && err.contains("persona compile"),
        "{err}"
    );

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let artifact = shared_artifact().to_str().unwrap();
    let err = persona(&[
        "ask",
        "--artifact",
        artifact,
        "--llm-url",
        &dead,
        "--timeout",
        "2",
        "hi",
    ])
    .failure();
    assert!(
        err.contains(&dead) && err.contains("scripts/llm.sh start"),
        "{err}"
    );
}

#[test]
fn an_unknown_timezone_in_the_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("persona.toml");
    std::fs::write(
        &config,
        "[creator]\nname = \"Wren\"\ntimezone = \"America/Atlantis\"\n",
    )
    .unwrap();
    let err = persona(&["ask", "--artifact", shared_artifact().to_str().unwrap(), "hi"])
        .env("PERSONA_CONFIG", &config)
        .failure();
    assert!(
        err.contains("America/Atlantis") && err.contains("creator.timezone"),
        "{err}"
    );
}

#[test]
fn an_artifact_built_with_another_embedding_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut artifact = persona::artifact::read(shared_artifact()).unwrap();
    artifact.manifest.embedding.model_sha256 = "0".repeat(64);
    artifact.manifest.embedding.model_id = "some/other-model".into();
    let path = dir.path().join("other-model.bin");
    persona::artifact::write(&path, &artifact).unwrap();
    // The file itself is sound: inspect reads it.
    assert!(persona(&["inspect", path.to_str().unwrap()])
        .success()
        .contains("some/other-model"));
    let err = persona(&["ask", "--artifact", path.to_str().unwrap(), "--dry-run", "hi"]).failure();
    assert!(
        err.contains("some/other-model") && err.contains("persona compile"),
        "{err}"
    );
}
