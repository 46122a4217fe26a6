//! `persona eval` through the real binary: `--responses` mode (no LLM) and its bad inputs.

mod common;

use common::{persona, root, shared_artifact};
use serde_json::Value;

fn eval(extra: &[&str]) -> common::Run {
    let artifact = shared_artifact().to_str().unwrap().to_string();
    let contrast = root().join("eval").join("contrast.jsonl");
    let mut args = vec![
        "eval",
        "--artifact",
        &artifact,
        "--contrast",
        contrast.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    persona(&args)
}

/// The held-out turns' real replies, in eval's order, from `inspect --json` and the dataset.
fn heldout_replies() -> Vec<String> {
    let manifest: Value =
        serde_json::from_str(&persona(&["inspect", shared_artifact().to_str().unwrap(), "--json"]).success())
            .unwrap();
    let data: Value = serde_json::from_slice(&std::fs::read(common::dataset()).unwrap()).unwrap();
    let mut out = Vec::new();
    for c in manifest["manifest"]["heldout"]["conversations"]
        .as_array()
        .unwrap()
    {
        let conv = &data[c.as_u64().unwrap() as usize];
        let messages = conv["chat_history"]["messages"].as_array().unwrap();
        for m in messages.iter().skip(1) {
            if m["from_creator"] == true {
                out.push(m["content"].as_str().unwrap().to_string());
            }
        }
        out.push(conv["output"].as_str().unwrap().to_string());
    }
    out
}

fn write_responses(dir: &std::path::Path, name: &str, replies: &[(usize, String)]) -> std::path::PathBuf {
    let path = dir.join(name);
    let lines: Vec<String> = replies
        .iter()
        .map(|(i, r)| serde_json::json!({"index": i, "response": r}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn responses_mode_scores_the_real_replies_above_assistant_replies() {
    let dir = tempfile::tempdir().unwrap();
    let real = heldout_replies();
    let n = 10;
    let real_file = write_responses(
        dir.path(),
        "real.jsonl",
        &real.iter().take(n).cloned().enumerate().collect::<Vec<_>>(),
    );
    let assistant: Vec<(usize, String)> = (0..n)
        .map(|i| (i, "Thank you so much for your message! I hope you are having a wonderful day. Please let me know if there is anything else I can help you with.".to_string()))
        .collect();
    let assistant_file = write_responses(dir.path(), "assistant.jsonl", &assistant);

    let run = |file: &std::path::Path| -> Value {
        let report = dir.path().join(file.file_stem().unwrap());
        let out = eval(&[
            "--responses",
            file.to_str().unwrap(),
            "--limit",
            &n.to_string(),
            "--json",
            "--report",
            report.to_str().unwrap(),
        ])
        .success();
        for f in ["report.md", "report.json", "report.svg", "side_by_side.md"] {
            assert!(report.join(f).exists(), "{f} written");
        }
        let page = std::fs::read_to_string(report.join("side_by_side.md")).unwrap();
        assert!(
            page.matches("**Real reply:**").count() == n.min(12),
            "one section per sampled turn: {page}"
        );
        serde_json::from_str(&out).unwrap()
    };
    let real_report = run(&real_file);
    let assistant_report = run(&assistant_file);
    let real_scores = &real_report["systems"]["responses"];
    // A reply identical to the real one has semantic similarity 1.
    assert!(
        (real_scores["semantic"]["mean"].as_f64().unwrap() - 1.0).abs() < 1e-3,
        "{real_scores}"
    );
    let style = |r: &Value| r["systems"]["responses"]["style"]["mean"].as_f64().unwrap();
    let vf = |r: &Value| {
        r["systems"]["responses"]["voice_fidelity"]["mean"]
            .as_f64()
            .unwrap()
    };
    assert!(
        style(&real_report) > style(&assistant_report) + 0.1,
        "{real_report} vs {assistant_report}"
    );
    assert!(vf(&real_report) > vf(&assistant_report));
    assert_eq!(real_report["items"].as_array().unwrap().len(), n);
    assert!(real_report["validity"]["style"].as_f64().unwrap() >= 0.85);
    assert!(real_report["validity"]["voice_fidelity"].as_f64().unwrap() >= 0.85);
    // Verbatim training replies stop outscoring the creator's own in-voice replies once copies
    // lose their style credit.
    let copies = &real_report["validity"]["copies"];
    assert!(
        copies["with_rule"].as_f64().unwrap() > copies["without_rule"].as_f64().unwrap(),
        "{copies}"
    );
    assert!(
        real_report["validity"]["other_creator"]["style"]
            .as_f64()
            .unwrap()
            >= 0.75
    );
}

#[test]
fn bad_eval_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = write_responses(dir.path(), "missing.jsonl", &[(0, "hi".into()), (2, "yo".into())]);
    let err = eval(&["--responses", missing.to_str().unwrap(), "--limit", "3"]).failure();
    assert!(err.contains("no response for 1 held-out turn(s): 1"), "{err}");

    let extra = write_responses(
        dir.path(),
        "extra.jsonl",
        &[(0, "a".into()), (1, "b".into()), (2, "c".into()), (9, "d".into())],
    );
    let err = eval(&["--responses", extra.to_str().unwrap(), "--limit", "3"]).failure();
    assert!(err.contains("index 9 is out of range"), "{err}");

    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, r#"{"not": "a list"}"#).unwrap();
    let err = eval(&[
        "--heldout",
        wrong.to_str().unwrap(),
        "--responses",
        extra.to_str().unwrap(),
    ])
    .failure();
    assert!(
        err.contains("wrong.json") && err.contains("expected a JSON list"),
        "{err}"
    );

    // An artifact with no held-out turns and no --heldout.
    let all = dir.path().join("all.bin");
    persona(&[
        "compile",
        common::dataset().to_str().unwrap(),
        "-o",
        all.to_str().unwrap(),
        "--holdout",
        "0",
    ])
    .env(
        "PERSONA_CONFIG",
        common::config_without_classifiers(dir.path(), ""),
    )
    .success();
    let contrast = root().join("eval").join("contrast.jsonl");
    let err = persona(&[
        "eval",
        "--artifact",
        all.to_str().unwrap(),
        "--contrast",
        contrast.to_str().unwrap(),
        "--responses",
        extra.to_str().unwrap(),
    ])
    .failure();
    assert!(
        err.contains("no held-out conversations") && err.contains("--heldout"),
        "{err}"
    );
    assert!(!dir.path().join("report").exists());
}
