//! `cachet report`: one self-contained HTML page of a build (no script, no network, no
//! external font): the compiles as bars coloured by outcome on a timeline, the server's
//! tokens in use (with each build's `-j` as a line) and its predicted memory underneath,
//! and tables of the slowest misses, the largest entries, the top miss reasons with their
//! `explain` lines, and the uncacheable calls. Drawn as inline SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Event, Lanes};

/// A miss as `explain` told it: its slot and causes.
pub struct Miss {
    pub slot: String,
    pub causes: Vec<String>,
}

const WIDTH: f64 = 1200.0;
const LANE: f64 = 14.0;
const MAX_LANES: usize = 80;

fn colour(outcome: &str) -> &'static str {
    match outcome {
        "hit" => "#2e9d4f",
        "miss" => "#e8843b",
        "failed" => "#d93025",
        o if o.starts_with("uncacheable") => "#9aa0a6",
        _ => "#8e44ad",
    }
}

fn outcome_class(outcome: &str) -> &str {
    outcome.split(':').next().unwrap_or(outcome)
}

/// Text for HTML and SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Request<'a> {
    start: u64,
    end: u64,
    name: &'a str,
    outcome: &'a str,
    build: &'a str,
    level: Option<&'a str>,
    bytes: u64,
}

/// The page for `events` (a build's timeline) and `misses` (its explained misses).
pub fn html(events: &[Event], misses: &[Miss]) -> String {
    let requests: Vec<Request> = events
        .iter()
        .filter_map(|e| match e {
            Event::Request {
                start_us,
                end_us,
                name,
                outcome,
                build,
                level,
                bytes,
                ..
            } => Some(Request {
                start: *start_us,
                end: *end_us,
                name,
                outcome,
                build,
                level: level.as_deref(),
                bytes: *bytes,
            }),
            _ => None,
        })
        .collect();
    let origin = events.iter().map(Event::start).min().unwrap_or(0);
    let end = events
        .iter()
        .map(|e| match e {
            Event::Request { end_us, .. } | Event::Run { end_us, .. } => *end_us,
            Event::Counter { at_us, .. } => *at_us,
        })
        .max()
        .unwrap_or(origin);
    let span = (end.saturating_sub(origin)).max(1_000) as f64;
    let x = |t: u64| 10.0 + (t.saturating_sub(origin)) as f64 / span * (WIDTH - 20.0);

    let mut out = String::new();
    let count = |what: &str| {
        requests
            .iter()
            .filter(|r| outcome_class(r.outcome) == what)
            .count()
    };
    let (hits, missed, uncacheable, failed) = (
        count("hit"),
        count("miss"),
        count("uncacheable"),
        count("failed"),
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>cachet build report</title><style>{STYLE}</style></head><body>\
         <h1>cachet build report</h1><p class=\"summary\">{} compiles over {:.1} s: \
         <b style=\"color:#2e9d4f\">{hits} hits</b>, <b style=\"color:#e8843b\">{missed} misses</b>, \
         <b style=\"color:#9aa0a6\">{uncacheable} not cacheable</b>, \
         <b style=\"color:#d93025\">{failed} failed</b>; hit rate {}.</p>",
        requests.len(),
        span / 1e6,
        if hits + missed == 0 {
            "-".to_owned()
        } else {
            format!("{:.0}%", hits as f64 * 100.0 / (hits + missed) as f64)
        }
    );

    // The compiles, each on the first lane free at its start.
    let mut lanes = Lanes::default();
    let mut bars = String::new();
    for r in &requests {
        let lane = lanes.place(r.start, r.end);
        let shown = lane.min(MAX_LANES - 1);
        let (x0, x1) = (x(r.start), x(r.end));
        let ms = r.end.saturating_sub(r.start) as f64 / 1000.0;
        let _ = write!(
            bars,
            "<rect class=\"compile\" data-outcome=\"{}\" data-name=\"{}\" x=\"{x0:.1}\" y=\"{:.1}\" \
             width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} ({}, {ms:.1} ms, build {})</title></rect>",
            escape(outcome_class(r.outcome)),
            escape(r.name),
            20.0 + shown as f64 * LANE,
            (x1 - x0).max(1.5),
            LANE - 3.0,
            colour(r.outcome),
            escape(r.name),
            escape(r.outcome),
            escape(r.build),
        );
    }
    let lanes_height = 30.0 + lanes.count().min(MAX_LANES) as f64 * LANE;
    let _ = write!(
        out,
        "<h2>Compiles</h2><svg class=\"timeline\" width=\"{WIDTH}\" height=\"{lanes_height}\" \
         viewBox=\"0 0 {WIDTH} {lanes_height}\">{}{bars}</svg>{LEGEND}",
        axis(span, lanes_height),
    );

    // Tokens in use (compilers running plus extra tokens) and memory, as steps.
    let mut tracks: BTreeMap<&str, i64> = BTreeMap::new();
    let mut tokens: Vec<(u64, i64)> = Vec::new();
    let mut memory: Vec<(u64, i64)> = Vec::new();
    let mut jobs: BTreeMap<String, i64> = BTreeMap::new();
    for e in events {
        if let Event::Counter {
            at_us,
            track,
            value,
        } = e
        {
            if track.starts_with("memory predicted") {
                memory.push((*at_us, *value));
                continue;
            }
            if track == "compilers running" || track.starts_with("extra tokens") {
                tracks.insert(track, *value);
                tokens.push((*at_us, tracks.values().sum()));
            }
            if let Some(j) = track
                .rsplit_once("(-j")
                .and_then(|(_, j)| j.trim_end_matches(')').parse::<i64>().ok())
            {
                let build = track.trim_start_matches("extra tokens, build ");
                jobs.insert(
                    build
                        .rsplit_once(" (-j")
                        .map_or(build, |(b, _)| b)
                        .to_owned(),
                    j,
                );
            }
        }
    }
    let top = tokens
        .iter()
        .map(|(_, v)| *v)
        .chain(jobs.values().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut lines = String::new();
    for (build, j) in &jobs {
        let y = 130.0 - *j as f64 / top * 110.0;
        let _ = write!(
            lines,
            "<line class=\"jobs\" x1=\"10\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"14\" y=\"{:.1}\" class=\"label\">-j{j} of build {}</text>",
            WIDTH - 10.0,
            y - 3.0,
            escape(build)
        );
    }
    let _ = write!(
        out,
        "<h2>Tokens in use (compilers and their extra threads)</h2>\
         <svg class=\"tokens\" width=\"{WIDTH}\" height=\"140\" viewBox=\"0 0 {WIDTH} 140\">\
         {}{lines}<text x=\"{:.0}\" y=\"14\" class=\"label\">peak {}</text></svg>",
        area(&tokens, top, &x, "#4a7bd0"),
        WIDTH - 90.0,
        tokens.iter().map(|(_, v)| *v).max().unwrap_or(0)
    );
    let mem_top = memory.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1) as f64;
    let _ = write!(
        out,
        "<h2>Memory predicted in use</h2><svg class=\"memory\" width=\"{WIDTH}\" height=\"140\" \
         viewBox=\"0 0 {WIDTH} 140\">{}<text x=\"{:.0}\" y=\"14\" class=\"label\">peak {} MiB</text></svg>",
        area(&memory, mem_top, &x, "#b36ae2"),
        WIDTH - 130.0,
        mem_top as i64
    );

    // Tables.
    let mut slowest: Vec<&Request> = requests
        .iter()
        .filter(|r| outcome_class(r.outcome) == "miss")
        .collect();
    slowest.sort_by_key(|r| std::cmp::Reverse(r.end - r.start));
    out.push_str("<h2>Slowest misses</h2><table class=\"slowest\"><tr><th>compile</th><th>time</th><th>build</th></tr>");
    for r in slowest.iter().take(10) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.1} ms</td><td>{}</td></tr>",
            escape(r.name),
            (r.end - r.start) as f64 / 1000.0,
            escape(r.build)
        );
    }
    out.push_str("</table>");
    let mut largest: Vec<&Request> = requests.iter().filter(|r| r.bytes > 0).collect();
    largest.sort_by_key(|r| std::cmp::Reverse(r.bytes));
    largest.dedup_by(|a, b| a.name == b.name && a.bytes == b.bytes);
    out.push_str("<h2>Largest entries</h2><table class=\"largest\"><tr><th>compile</th><th>size</th><th>outcome</th><th>level</th></tr>");
    for r in largest.iter().take(10) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.1} KiB</td><td>{}</td><td>{}</td></tr>",
            escape(r.name),
            r.bytes as f64 / 1024.0,
            escape(outcome_class(r.outcome)),
            escape(r.level.unwrap_or("-"))
        );
    }
    out.push_str("</table>");
    let mut reasons: BTreeMap<&str, (usize, &str, &str)> = BTreeMap::new();
    for miss in misses {
        for cause in &miss.causes {
            let kind = cause.split(':').next().unwrap_or(cause);
            let entry = reasons.entry(kind).or_insert((0, cause, &miss.slot));
            entry.0 += 1;
        }
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by_key(|(_, (n, _, _))| std::cmp::Reverse(*n));
    out.push_str("<h2>Top miss reasons</h2><table class=\"reasons\"><tr><th>reason</th><th>misses</th><th>for example (cachet explain)</th></tr>");
    for (kind, (n, example, slot)) in reasons.iter().take(12) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{n}</td><td>{}: {}</td></tr>",
            escape(kind),
            escape(slot),
            escape(example)
        );
    }
    out.push_str("</table>");
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &requests {
        if let Some(reason) = r.outcome.strip_prefix("uncacheable: ") {
            *refused.entry(reason).or_default() += 1;
        }
    }
    out.push_str(
        "<h2>Not cacheable</h2><table class=\"uncacheable\"><tr><th>why</th><th>calls</th></tr>",
    );
    for (reason, n) in &refused {
        let _ = write!(out, "<tr><td>{}</td><td>{n}</td></tr>", escape(reason));
    }
    out.push_str("</table></body></html>\n");
    out
}

/// A step area of `points` (time, value) scaled to `top`.
fn area(points: &[(u64, i64)], top: f64, x: &dyn Fn(u64) -> f64, fill: &str) -> String {
    if points.is_empty() {
        return String::new();
    }
    let y = |v: i64| 130.0 - v as f64 / top * 110.0;
    let mut path = format!("M{:.1},130", x(points[0].0));
    let mut last = 0;
    for (t, v) in points {
        let _ = write!(
            path,
            " L{:.1},{:.1} L{:.1},{:.1}",
            x(*t),
            y(last),
            x(*t),
            y(*v)
        );
        last = *v;
    }
    let end = points.last().map_or(0, |(t, _)| *t);
    let _ = write!(path, " L{:.1},130 Z", x(end));
    format!("<path d=\"{path}\" fill=\"{fill}\" fill-opacity=\"0.55\" stroke=\"{fill}\"/>")
}

/// Seconds along the top of the timeline.
fn axis(span: f64, height: f64) -> String {
    let seconds = span / 1e6;
    let step = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0]
        .into_iter()
        .find(|s| seconds / s <= 12.0)
        .unwrap_or(600.0);
    let mut out = String::new();
    let mut t = 0.0;
    while t <= seconds {
        let px = 10.0 + t / seconds * (WIDTH - 20.0);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"14\" y2=\"{height}\"/>\
             <text x=\"{:.1}\" y=\"11\" class=\"label\">{t:.1} s</text>",
            px + 2.0
        );
        t += step;
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 sans-serif;margin:24px;color:#202124;background:#fff}\
h1{font-size:22px}h2{font-size:16px;margin-top:28px}svg{border:1px solid #dadce0;background:#fafafa}\
.grid{stroke:#e0e0e0}.label{font-size:11px;fill:#5f6368}.jobs{stroke:#d93025;stroke-dasharray:6 4}\
table{border-collapse:collapse;margin-top:6px}td,th{border:1px solid #dadce0;padding:3px 8px;text-align:left}\
th{background:#f1f3f4}.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 14px;vertical-align:middle}";

const LEGEND: &str = "<p class=\"legend\"><span style=\"background:#2e9d4f\"></span>hit\
<span style=\"background:#e8843b\"></span>miss<span style=\"background:#9aa0a6\"></span>not cacheable\
<span style=\"background:#d93025\"></span>failed<span style=\"background:#8e44ad\"></span>cancelled or server error</p>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_compile_and_nothing_external() {
        let events = vec![
            Event::Request {
                start_us: 0,
                end_us: 5_000,
                name: "a<b>.c".into(),
                outcome: "hit".into(),
                build: "pipe:[1]".into(),
                level: Some("redis".into()),
                key: None,
                bytes: 20_480,
            },
            Event::Request {
                start_us: 1_000,
                end_us: 90_000,
                name: "b.c".into(),
                outcome: "miss".into(),
                build: "pipe:[1]".into(),
                level: None,
                key: None,
                bytes: 0,
            },
            Event::Counter {
                at_us: 1_000,
                track: "extra tokens, build pipe:[1] (-j4)".into(),
                value: 2,
            },
        ];
        let misses = [Miss {
            slot: "b.o from b.c".into(),
            causes: vec!["argument changed: -O2 → -O3".into()],
        }];
        let page = html(&events, &misses);
        assert_eq!(page.matches("class=\"compile\"").count(), 2);
        assert!(page.contains("data-outcome=\"hit\" data-name=\"a&lt;b&gt;.c\""));
        assert!(page.contains("-j4 of build pipe:[1]"));
        assert!(page.contains("argument changed: -O2 → -O3"));
        assert!(page.contains("<td>20.0 KiB</td><td>hit</td><td>redis</td>"));
        assert!(!page.contains("http"), "nothing to fetch");
        assert!(!page.contains("<script"));
    }
}
