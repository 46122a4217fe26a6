//! `persona compile`, `inspect` and `doctor` end to end through the real binary.

mod common;

use common::json;

use common::{dataset, persona, shared_artifact};

#[test]
fn compile_reports_examples_dims_and_heldout_and_recompiles_from_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // The assets stay where they are installed; only the embedding cache is fresh.
    let assets = persona_assets();
    let out = dir.path().join("p.bin");
    // The classifiers are not what this test is about; with them off a fresh cache embeds only
    // the examples.
    let config = common::config_without_classifiers(dir.path(), "");
    let run = || {
        persona(&[
            "compile",
            dataset().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ])
        .env("PERSONA_CACHE_DIR", &cache)
        .env("XDG_CACHE_HOME", dir.path())
        .env("PERSONA_CONFIG", &config)
    };
    link_assets(&assets, &cache);
    let first = json(&run().success());
    assert!(first["examples"].as_u64().unwrap() >= 400, "{first}");
    assert_eq!(first["dims"], 384);
    let heldout = first["heldout_conversations"].as_u64().unwrap();
    assert!(heldout > 0, "{first}");
    assert_eq!(first["embedded"], first["examples"], "{first}");
    assert_eq!(first["cached"], 0);

    let second = json(&run().success());
    assert_eq!(second["embedded"], 0, "{second}");
    assert_eq!(second["cached"], first["examples"]);
    assert_eq!(
        second["heldout_conversations"], heldout,
        "the split is deterministic"
    );

    let manifest = json(&persona(&["inspect", out.to_str().unwrap(), "--json"]).success());
    assert_eq!(manifest["manifest"]["examples"], first["examples"]);
    assert_eq!(
        manifest["manifest"]["heldout"]["conversations"]
            .as_array()
            .unwrap()
            .len() as u64,
        heldout
    );
    assert_eq!(manifest["manifest"]["embedding"]["dims"], 384);
    assert_eq!(manifest["manifest"]["embedding"]["pooling"], "mean");
    assert_eq!(manifest["creator"]["timezone"], "America/New_York");
}

#[test]
fn holdout_zero_indexes_every_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all.bin");
    let all = json(
        &persona(&[
            "compile",
            dataset().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--holdout",
            "0",
            "--json",
        ])
        .env(
            "PERSONA_CONFIG",
            common::config_without_classifiers(dir.path(), ""),
        )
        .success(),
    );
    assert_eq!(all["heldout_conversations"], 0);
    let default = json(&persona(&["inspect", shared_artifact().to_str().unwrap(), "--json"]).success());
    assert!(all["examples"].as_u64() > default["manifest"]["examples"].as_u64());
}

#[test]
fn bad_datasets_fail_with_the_place_and_leave_the_old_artifact_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keep.bin");
    std::fs::copy(shared_artifact(), &out).unwrap();
    let before = std::fs::read(&out).unwrap();
    // (case, file contents, text the error must contain)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not json", b"chat logs, not json".to_vec(), "line 1, column 1"),
        ("truncated", br#"[{"chat_history": {"messages": ["#.to_vec(), "line 1"),
        ("wrong top level", br#"{"conversations": []}"#.to_vec(), "expected a JSON list"),
        ("empty list", b"[]".to_vec(), "empty"),
        ("missing output", br#"[{"chat_history": {"messages": []}}]"#.to_vec(), "output"),
        (
            "mistyped field",
            br#"[{"chat_history": {"messages": [{"from_creator": 1, "content": "hi"}]}, "output": "x"}]"#.to_vec(),
            "[0].chat_history.messages[0].from_creator",
        ),
        (
            "empty content",
            br#"[{"chat_history": {"messages": [{"from_creator": false, "content": ""}]}, "output": "x"}]"#.to_vec(),
            "[0].chat_history.messages[0].content",
        ),
        ("invalid utf-8", b"[{\"chat_history\": \xff}]".to_vec(), "UTF-8"),
        (
            "absurdly long message",
            format!(
                r#"[{{"chat_history": {{"messages": [{{"from_creator": false, "content": "{}"}}]}}, "output": "x"}}]"#,
                "a".repeat(100_000)
            )
            .into_bytes(),
            "over the cap",
        ),
    ];
    for (name, contents, expected) in cases {
        let file = dir.path().join("bad.json");
        std::fs::write(&file, contents).unwrap();
        let err = persona(&["compile", file.to_str().unwrap(), "-o", out.to_str().unwrap()]).failure();
        assert!(err.contains(expected), "{name}: {err}");
        assert!(
            err.contains("bad.json"),
            "{name}: the error names the file: {err}"
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            before,
            "{name}: the old artifact is untouched"
        );
    }
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 2, "no temporary files left behind: {entries:?}");
}

#[test]
fn an_output_path_in_a_missing_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no/such/dir/p.bin");
    let err = persona(&[
        "compile",
        dataset().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
    .failure();
    assert!(
        err.contains("does not exist") && err.contains("no/such/dir"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn inspect_refuses_damaged_and_foreign_artifacts() {
    let good = std::fs::read(shared_artifact()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&99u32.to_le_bytes());
    newer[12..16].copy_from_slice(&99u32.to_le_bytes());
    // (case, bytes, text the error must contain)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 3].to_vec(), "truncated"),
        ("bit flip", flipped, "checksum"),
        (
            "foreign",
            b"%PDF-1.7 not an artifact".to_vec(),
            "not a persona artifact",
        ),
        ("newer format", newer, "upgrade persona"),
    ];
    for (name, bytes, expected) in cases {
        let file = dir.path().join(format!("{}.bin", name.replace(' ', "_")));
        std::fs::write(&file, bytes).unwrap();
        // `--verify` also checks the blocks that opening leaves to be verified on use, so a flip
        // anywhere in the file is caught.
        let err = persona(&["inspect", "--verify", file.to_str().unwrap()]).failure();
        assert!(
            err.contains(expected) && err.contains(file.to_str().unwrap()),
            "{name}: {err}"
        );
    }
    let err = persona(&["inspect", dir.path().join("missing.bin").to_str().unwrap()]).failure();
    assert!(err.contains("persona compile"), "{err}");
}

#[test]
fn doctor_names_the_fix_when_assets_are_missing() {
    let empty = tempfile::tempdir().unwrap();
    let out = persona(&["doctor"])
        .env("PERSONA_CACHE_DIR", empty.path())
        .output();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL") && text.contains("setup-assets.sh"),
        "{text}"
    );

    let err = persona(&[
        "compile",
        dataset().to_str().unwrap(),
        "-o",
        empty.path().join("x.bin").to_str().unwrap(),
    ])
    .env("PERSONA_CACHE_DIR", empty.path())
    .failure();
    assert!(
        err.contains("ONNX Runtime is not installed") && err.contains("setup-assets.sh"),
        "{err}"
    );
}

#[test]
fn doctor_passes_on_this_installation() {
    let out = persona(&["doctor", "--json"]).output();
    let findings = json(&String::from_utf8_lossy(&out.stdout));
    for f in findings.as_array().unwrap() {
        if f["required"] == true {
            assert_eq!(f["ok"], true, "{f}");
        }
    }
    assert!(out.status.success());
}

/// The installed assets directory (the user's cache).
fn persona_assets() -> std::path::PathBuf {
    persona::paths::cache_dir().join("assets")
}

/// Makes `cache/assets` point at the installed assets, so a fresh cache needs no reinstall.
fn link_assets(assets: &std::path::Path, cache: &std::path::Path) {
    std::fs::create_dir_all(cache).unwrap();
    std::os::unix::fs::symlink(assets, cache.join("assets")).unwrap();
}
