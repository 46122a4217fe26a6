//! The eval report: one structure rendered as Markdown, JSON and an SVG bar chart.
//!
//! Owns the layout of what `persona eval` prints and writes with `--report DIR`. Writing goes
//! through `artifact::write_atomic`, so a report directory never holds half a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::eval::metrics::Interval;
use crate::eval::{ItemScore, SystemSummary, Validity};

/// Everything `persona eval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was run: model, temperature, seed, turns.
    pub settings: serde_json::Value,
    /// Held-out turns scored.
    pub turns: usize,
    /// Per system.
    pub systems: BTreeMap<&'static str, SystemSummary>,
    /// Paired differences, e.g. `knn - zero_shot` -> metric -> interval.
    pub differences: BTreeMap<String, BTreeMap<&'static str, Interval>>,
    /// The metric's validity.
    pub validity: Validity,
    /// Per-item scores.
    pub items: Vec<ItemScore>,
    /// What each held-out turn was: the fan's message and the creator's real reply.
    pub turn_texts: Vec<TurnText>,
}

/// One held-out turn as a person reads it.
#[derive(Debug, Clone, Serialize)]
pub struct TurnText {
    /// The conversation's id.
    pub conversation: String,
    /// The fan's last message before the reply.
    pub fan: String,
    /// The creator's real reply.
    pub real: String,
}

fn cell(i: &Interval) -> String {
    format!("{:.3} [{:.3}, {:.3}]", i.mean, i.low, i.high)
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let s = &r.settings;
    let _ = writeln!(
        out,
        "persona eval: {} held-out turns, model `{}`, temperature {}, seed {}, k {}\n",
        r.turns,
        s["model"].as_str().unwrap_or("?"),
        s["temperature"],
        s["seed"],
        s["k"]
    );
    out.push_str(
        "| system | voice_fidelity | semantic | style | violations (draft -> final) | copies (longest demo span) |\n",
    );
    out.push_str("|---|---|---|---|---|---|\n");
    for (name, m) in &r.systems {
        let draft = m.violations.draft.map_or("-".to_string(), |d| format!("{d:.3}"));
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {draft} -> {:.3} | {:.3} ({:.1} words) |",
            cell(&m.voice_fidelity),
            cell(&m.semantic),
            cell(&m.style),
            m.violations.final_,
            m.copy_rate,
            m.demo_span
        );
    }
    out.push_str("\nmeans with bootstrap 95% intervals over turns.\n");
    for (pair, metrics) in &r.differences {
        let parts: Vec<String> = metrics
            .iter()
            .map(|(m, i)| format!("{m} {:+.3} [{:+.3}, {:+.3}]", i.mean, i.low, i.high))
            .collect();
        let _ = writeln!(out, "\n{pair}: {}", parts.join(", "));
    }
    let v = &r.validity;
    let _ = writeln!(
        out,
        "\nvalidity on `{}` ({} turns; real and in-voice replies vs assistant-style replies to the same messages): \
         style pairwise accuracy {:.3}, voice_fidelity pairwise accuracy {:.3} (floor {:.2}); style parts alone: {}",
        v.contrast.display(),
        v.turns,
        v.style,
        v.voice_fidelity,
        v.floor,
        v.style_parts.iter().map(|(k, a)| format!("{k} {a:.3}")).collect::<Vec<_>>().join(", ")
    );
    let c = &v.copies;
    let _ = writeln!(
        out,
        "\ncopies ({} turns; the in-voice reply vs the training reply nearest the real one, sent verbatim; \
         {} of those flagged as copies): voice_fidelity pairwise accuracy {:.3} without the copy rule, {:.3} with it",
        c.turns, c.flagged, c.without_rule, c.with_rule
    );
    if let Some(o) = &v.other_creator {
        let _ = writeln!(
            out,
            "\nvalidity against another creator ({} turns; real and in-voice replies vs another creator's replies to the same messages): \
             style pairwise accuracy {:.3}, voice_fidelity pairwise accuracy {:.3} (floor {:.2})",
            o.turns, o.style, o.voice_fidelity, o.floor
        );
    }
    out
}

/// A bar chart of voice_fidelity and style per system, with their intervals, as SVG.
pub fn svg(r: &Report) -> String {
    let (w, h, left, bottom, top) = (640.0, 360.0, 60.0, 60.0, 40.0);
    let plot_h = h - bottom - top;
    let names: Vec<&&str> = r.systems.keys().collect();
    let group = (w - left - 20.0) / names.len().max(1) as f64;
    let y = |v: f64| top + plot_h * (1.0 - v.clamp(0.0, 1.0));
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"22\" font-size=\"14\">voice fidelity and style by system (mean, 95% interval), {} turns</text>\n",
        r.turns
    );
    for t in 0..=5 {
        let v = f64::from(t) / 5.0;
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
            w - 20.0,
            y(v),
            y(v),
            left - 6.0,
            y(v) + 4.0
        );
    }
    let colors = [("voice_fidelity", "#6a4c93"), ("style", "#8ac926")];
    for (g, name) in names.iter().enumerate() {
        let m = &r.systems[**name];
        let x0 = left + group * g as f64 + group * 0.15;
        let bar_w = group * 0.3;
        for (b, (metric, color)) in colors.iter().enumerate() {
            let i = if *metric == "style" {
                &m.style
            } else {
                &m.voice_fidelity
            };
            let x = x0 + bar_w * b as f64;
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\n\
                 <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{:.2}</text>",
                y(i.mean),
                bar_w - 4.0,
                y(0.0) - y(i.mean),
                x + bar_w / 2.0 - 2.0,
                x + bar_w / 2.0 - 2.0,
                y(i.low),
                y(i.high),
                x + bar_w / 2.0 - 2.0,
                y(i.high) - 4.0,
                i.mean
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>",
            x0 + bar_w,
            h - bottom + 18.0
        );
    }
    for (b, (metric, color)) in colors.iter().enumerate() {
        let x = left + 160.0 * b as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{metric}</text>",
            h - 24.0,
            x + 16.0,
            h - 14.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Text made safe for one Markdown table cell.
fn table_text(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', "<br>")
}

/// The turns a side-by-side page shows: at most `sample`, spread evenly over all of them.
fn sampled(turns: usize, sample: usize) -> Vec<usize> {
    let shown = sample.min(turns);
    (0..shown).map(|k| k * turns / shown).collect()
}

/// A page to read as a person: for a sample of turns, the fan's message, the real reply, and each
/// system's reply with its scores.
pub fn side_by_side(r: &Report, sample: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Side by side: {} of {} held-out turns\n\nEach system's final reply with voice_fidelity (vf), style, semantic (sem), the longest \
         run of words shared with its own demos, and whether it is a near-verbatim copy of a training reply.\n",
        sampled(r.turn_texts.len(), sample).len(),
        r.turn_texts.len()
    );
    for t in sampled(r.turn_texts.len(), sample) {
        let turn = &r.turn_texts[t];
        let _ = writeln!(
            out,
            "## Turn {t} (conversation {})\n\n**Fan:** {}\n\n**Real reply:** {}\n",
            turn.conversation,
            turn.fan.replace('\n', " "),
            turn.real.replace('\n', " ")
        );
        out.push_str(
            "| system | reply | vf | style | sem | demo span | copy |\n|---|---|---|---|---|---|---|\n",
        );
        for i in r.items.iter().filter(|i| i.index == t) {
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {} | {} |",
                i.system,
                table_text(&i.reply),
                i.voice_fidelity,
                i.style,
                i.semantic,
                i.copying.demo_span,
                if i.copying.copied { "yes" } else { "no" }
            );
        }
        out.push('\n');
    }
    out
}

/// Writes `report.md`, `report.json`, `report.svg` and `side_by_side.md` into `dir` (created if
/// missing).
pub fn write_dir(r: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the report directory `{}`", dir.display()))?;
    crate::artifact::write_atomic(&dir.join("report.md"), markdown(r).as_bytes())?;
    crate::artifact::write_atomic(
        &dir.join("report.json"),
        serde_json::to_string_pretty(r)?.as_bytes(),
    )?;
    crate::artifact::write_atomic(&dir.join("report.svg"), svg(r).as_bytes())?;
    crate::artifact::write_atomic(&dir.join("side_by_side.md"), side_by_side(r, 12).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_spread_over_every_turn() {
        assert_eq!(
            sampled(124, 12),
            [0, 10, 20, 31, 41, 51, 62, 72, 82, 93, 103, 113]
        );
        assert_eq!(sampled(13, 12).len(), 12, "a full sample, not every second turn");
        assert_eq!(sampled(3, 12), [0, 1, 2]);
        assert!(sampled(5, 0).is_empty());
        assert!(sampled(0, 12).is_empty());
    }

    #[test]
    fn a_table_cell_keeps_its_pipes_and_newlines_inside() {
        assert_eq!(table_text("a | b\nc"), "a \\| b<br>c");
    }
}
