//! `persona serve` through the real binary on a free port, against the real local LLM.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{llm_url, root, shared_artifact};
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(db: &std::path::Path, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::start_on(db.to_str().unwrap(), extra, envs)
    }

    /// A server whose history is `history`: an SQLite path or a postgres:// URL.
    fn start_on(history: &str, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let url = extra
            .windows(2)
            .find(|w| w[0] == "--llm-url")
            .map_or_else(llm_url, |w| w[1].to_string());
        let extra: Vec<&str> = extra
            .iter()
            .enumerate()
            .filter(|(i, a)| **a != "--llm-url" && (*i == 0 || extra[i - 1] != "--llm-url"))
            .map(|(_, a)| *a)
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_persona"));
        cmd.args([
            "serve",
            "--artifact",
            shared_artifact().to_str().unwrap(),
            "--addr",
            &addr,
        ])
        .args([
            "--history",
            history,
            "--llm-url",
            &url,
            "--timeout",
            "300",
            "--seed",
            "7",
        ])
        .args(&extra)
        .env("PERSONA_CONFIG", root().join("persona.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("serve starts");
        let server = Server {
            child,
            base: format!("http://{addr}"),
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if client().get(format!("{}/healthz", server.base)).send().is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("serve did not come up on {addr}");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = client().post(url).json(body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn both_endpoints_answer_and_history_carries_across_calls() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("h.sqlite3"), &[], &[]);

    let (status, first) = post(
        &server.url("/v1/reply"),
        &json!({"fan_id": "mike", "message": "hi wren! mike here, i grow tomatoes", "fan": {"name": "Mike"}}),
    );
    assert_eq!(status, 200, "{first}");
    assert!(!first["reply"].as_str().unwrap().trim().is_empty());
    assert_eq!(first["demos"].as_array().unwrap().len(), 3);
    assert_eq!(first["filter"]["input"]["blocked"], false);

    let (status, second) = post(
        &server.url("/v1/reply"),
        &json!({"fan_id": "mike", "message": "remember me?"}),
    );
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["context"]["messages"], 3, "{second}");
    assert_eq!(second["context"]["fan_profile"], "name: Mike");

    let history: Value = client()
        .get(server.url("/v1/fans/mike/messages"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0]["content"], "hi wren! mike here, i grow tomatoes");
    assert_eq!(messages[1]["content"], first["reply"]);

    // The official OpenAI request shape: system + user messages, the persona as the model.
    let (status, completion) = post(
        &server.url("/v1/chat/completions"),
        &json!({"model": "Wren", "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "hey you, what are you drinking tonight?"}
        ], "temperature": 0.2}),
    );
    assert_eq!(status, 200, "{completion}");
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    assert!(!completion["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(completion["model"], "Wren");

    let (status, err) = post(
        &server.url("/v1/chat/completions"),
        &json!({"messages": [{"role": "user", "content": "hi"}], "stream": true, "n": 2}),
    );
    assert_eq!(status, 400, "one streamed choice only: {err}");
    assert_eq!(err["error"]["type"], "invalid_request_error");

    let models: Value = client()
        .get(server.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], "Wren");
    let health: Value = client()
        .get(server.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["llm_reachable"], true);
    assert_eq!(health["creators"][0]["creator"], "Wren");
}

#[test]
fn auth_limits_and_bad_input_get_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("h.sqlite3"),
        &["--token-env", "TEST_TOKEN", "--rate-per-minute", "1"],
        &[("TEST_TOKEN", "s3cret")],
    );
    let c = client();
    let send = |body: &str, token: Option<&str>| {
        let mut r = c
            .post(server.url("/v1/reply"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    let ok = json!({"fan_id": "ana", "message": "hello"}).to_string();
    // (case, body, token, expected status)
    let huge = json!({"fan_id": "ana", "message": "a".repeat(5000)}).to_string();
    let over_limit = json!({"fan_id": "ana", "message": "a".repeat(100_000)}).to_string();
    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        ("no token", ok.clone(), None, 401),
        ("wrong token", ok.clone(), Some("nope"), 401),
        ("malformed json", "{\"fan_id\": ".into(), Some("s3cret"), 400),
        (
            "wrong types",
            json!({"fan_id": 5, "message": ["x"]}).to_string(),
            Some("s3cret"),
            400,
        ),
        (
            "empty message",
            json!({"fan_id": "ana", "message": "  "}).to_string(),
            Some("s3cret"),
            400,
        ),
        ("message over the cap", huge, Some("s3cret"), 413),
        ("body over the limit", over_limit, Some("s3cret"), 413),
        ("first message", ok.clone(), Some("s3cret"), 200),
        ("rate limited", ok.clone(), Some("s3cret"), 429),
    ];
    for (name, body, token, expected) in cases {
        let (status, value) = send(&body, token);
        assert_eq!(status, expected, "{name}: {value}");
        if expected != 200 {
            assert!(
                value["error"]["message"].is_string(),
                "{name}: JSON error body: {value}"
            );
        }
    }
    let r = c
        .get(server.url("/v1/fans/nobody/messages"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = c.get(server.url("/v1/nothing-here")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Still up.
    assert_eq!(
        c.get(server.url("/healthz")).send().unwrap().status().as_u16(),
        200
    );
}

#[test]
fn a_dead_llm_gives_503_and_a_full_queue_gives_503() {
    let dir = tempfile::tempdir().unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let server = Server::start(&dir.path().join("h.sqlite3"), &["--llm-url", &dead], &[]);
    let (status, err) = post(
        &server.url("/v1/reply"),
        &json!({"fan_id": "ana", "message": "hello"}),
    );
    assert_eq!(status, 503, "{err}");
    assert!(
        !err.to_string().contains(&dead),
        "no internals in the error body: {err}"
    );
    let health: Value = client()
        .get(server.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["llm_reachable"], false);
    drop(server);

    let server = Server::start(
        &dir.path().join("q.sqlite3"),
        &["--max-queue", "1", "--llm-concurrency", "1"],
        &[],
    );
    let url = server.url("/v1/reply");
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                post(
                    &url,
                    &json!({"fan_id": format!("f{i}"), "message": "tell me about your day"}),
                )
                .0
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.contains(&200) && statuses.contains(&503), "{statuses:?}");
}

#[test]
fn a_kill_mid_request_leaves_no_half_exchange_and_sigterm_finishes_in_flight_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.sqlite3");
    let server = Server::start(&db, &[], &[]);
    let url = server.url("/v1/reply");
    let request = std::thread::spawn(move || {
        let _ = client()
            .post(url)
            .json(&json!({"fan_id": "kim", "message": "are you still up?"}))
            .send();
    });
    std::thread::sleep(Duration::from_millis(400));
    server.signal("-KILL");
    let _ = request.join();
    drop(server);

    // The exchange is one transaction: either nothing of it was stored (the client retries) or
    // the message and its reply both were, never the message alone.
    let server = Server::start(&db, &[], &[]);
    let response = client().get(server.url("/v1/fans/kim/messages")).send().unwrap();
    if response.status() == 200 {
        let history: Value = response.json().unwrap();
        let messages = history["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2, "{history}");
        assert_eq!(messages[0]["content"], "are you still up?", "{history}");
        assert_eq!(messages[1]["from_creator"], true, "{history}");
    } else {
        assert_eq!(response.status(), 404, "no fan record at all");
    }

    // SIGTERM while a request is in flight: it still gets its answer, then the server exits.
    let url = server.url("/v1/reply");
    let request =
        std::thread::spawn(move || post(&url, &json!({"fan_id": "kim", "message": "goodnight wren"})));
    std::thread::sleep(Duration::from_millis(400));
    server.signal("-TERM");
    let (status, body) = request.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let mut server = server;
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// A second creator's artifact: the same chats compiled under another name (the compile-time
/// classifiers off, to keep it quick; they are not what this test is about).
fn other_creator_artifact(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let base = common::config_without_classifiers(dir, "");
    let text = std::fs::read_to_string(&base)
        .unwrap()
        .replace("name = \"Wren\"", &format!("name = \"{name}\""));
    assert!(
        text.contains(&format!("name = \"{name}\"")),
        "the creator's name is set in persona.toml"
    );
    let config = dir.join("other.toml");
    std::fs::write(&config, text).unwrap();
    let out = dir.join(format!("{name}.bin"));
    common::persona(&[
        "compile",
        common::dataset().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
    .env("PERSONA_CONFIG", &config)
    .success();
    out
}

#[test]
fn the_official_openai_sdk_streams_keeps_a_fans_history_and_speaks_as_two_creators() {
    let dir = tempfile::tempdir().unwrap();
    let ivy = other_creator_artifact(dir.path(), "Ivy");
    let setup = Command::new("bash")
        .arg(root().join("scripts/setup-sdk.sh"))
        .output()
        .expect("bash runs");
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let python = String::from_utf8(setup.stdout).unwrap().trim().to_string();
    let server = Server::start(
        &dir.path().join("h.sqlite3"),
        &["--artifact", ivy.to_str().unwrap(), "--token-env", "SDK_TOKEN"],
        &[("SDK_TOKEN", "sdk-secret")],
    );
    let run = Command::new(&python)
        .arg(root().join("tests/sdk/openai_client.py"))
        .args([&server.url("/v1"), "sdk-secret", "Wren", "Ivy"])
        .output()
        .expect("the SDK's python runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let seen = common::json(&String::from_utf8_lossy(&run.stdout));

    assert_eq!(seen["models"], json!(["Ivy", "Wren"]));
    let plain = &seen["plain"];
    assert_eq!(
        (plain["model"].as_str(), plain["finish_reason"].as_str()),
        (Some("Wren"), Some("stop"))
    );
    assert!(!plain["content"].as_str().unwrap().trim().is_empty());
    let usage = &plain["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().unwrap() > 0,
        "real usage from the LLM: {usage}"
    );
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap())
    );

    let stream = &seen["stream"];
    assert_eq!(stream["role"], "assistant");
    assert_eq!(stream["finish_reasons"], json!(["stop"]));
    assert!(stream["usage"]["total_tokens"].as_u64().unwrap() > 0, "{stream}");
    // The fan's history is the server's: both turns stored once each, in order, and what was
    // streamed is exactly the stored (filtered) reply.
    let history = seen["history"].as_array().expect("the fan has a stored history");
    assert_eq!(history.len(), 4, "{history:?}");
    assert_eq!(history[0], "hi! dana here, i just got back from a run");
    assert_eq!(history[1], stream["first_reply"]);
    assert_eq!(history[2], "what should i cook tonight?");
    assert_eq!(history[3], stream["text"]);

    let other = &seen["other"];
    assert_eq!(other["model"], "Ivy");
    assert_eq!(
        other["history"].as_array().map(Vec::len),
        Some(2),
        "the same fan id has its own history with each creator"
    );
    assert_eq!(
        seen["errors"],
        json!({"unknown_model": "NotFoundError", "stream_n2": "BadRequestError", "wrong_key": "AuthenticationError"})
    );
}

#[test]
fn two_servers_on_one_postgres_database_carry_a_fans_conversation_across_a_kill() {
    let db = common::postgres_url();
    let a = Server::start_on(&db, &[], &[]);
    let b = Server::start_on(&db, &[], &[]);
    let fan = format!(
        "pg-fan-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let say = |server: &Server, text: &str, key: &str| {
        let r = client()
            .post(server.url("/v1/reply"))
            .header("idempotency-key", key)
            .json(&json!({"fan_id": fan, "message": text}))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    let (status, r1) = say(&a, "hi wren, it's jo", "m1");
    assert_eq!(status, 200, "{r1}");
    let (status, r2) = say(&b, "remember me from a minute ago?", "m2");
    assert_eq!(status, 200, "{r2}");
    assert_eq!(
        r2["context"]["messages"], 3,
        "server B answered from server A's exchange: {r2}"
    );

    // A is killed while answering; the client retries on B with the same key.
    let url = a.url("/v1/reply");
    let body = json!({"fan_id": fan, "message": "ok goodnight"});
    let cut = std::thread::spawn(move || {
        let _ = client()
            .post(url)
            .header("idempotency-key", "m3")
            .json(&body)
            .send();
    });
    std::thread::sleep(Duration::from_millis(400));
    a.signal("-KILL");
    let _ = cut.join();
    drop(a);
    let (status, r3) = say(&b, "ok goodnight", "m3");
    assert_eq!(status, 200, "{r3}");

    let history: Value = client()
        .get(b.url(&format!("/v1/fans/{fan}/messages")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let messages: Vec<(bool, String)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["from_creator"].as_bool().unwrap(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        (false, "hi wren, it's jo".to_string()),
        (true, r1["reply"].as_str().unwrap().to_string()),
        (false, "remember me from a minute ago?".to_string()),
        (true, r2["reply"].as_str().unwrap().to_string()),
        (false, "ok goodnight".to_string()),
        (true, r3["reply"].as_str().unwrap().to_string()),
    ];
    assert_eq!(messages, expected, "every exchange once, in order, nothing lost");
}
