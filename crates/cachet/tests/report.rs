//! `cachet report`: the HTML page of a real parallel build, rendered by headless Chromium
//! (Debian's `chromium`, as root with `--no-sandbox`): one bar per compile with its
//! outcome in the DOM, a screenshot that is not blank, and no request from the page in
//! Chromium's network log.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Flags that keep headless Chromium from its own background traffic as far as they go.
const CHROMIUM: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
];

/// Runs Chromium on `page` with `extra` flags, in a profile and HOME of its own under
/// `dir`; its stdout.
fn chromium(dir: &Path, page: &Path, extra: &[String]) -> String {
    let profile = dir.join("chromium-profile");
    let out = Command::new("timeout")
        .arg("120")
        .arg("chromium")
        .args(CHROMIUM)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .env("HOME", dir)
        .stdin(no_input())
        .stderr(discard(dir, "chromium.err"))
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The requests in a net log that a page started (Chromium's own background requests
/// have the initiator "not an origin"; a file page's have "null").
fn page_requests(net_log: &Path) -> Vec<String> {
    let log: serde_json::Value = serde_json::from_slice(&std::fs::read(net_log).unwrap()).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start_job)
        .filter(|e| e["params"]["url"].is_string())
        .filter(|e| e["params"]["initiator"] != "not an origin")
        .map(|e| e["params"]["url"].as_str().unwrap().to_owned())
        .collect()
}

fn net_log(dir: &Path, page: &Path, name: &str) -> Vec<String> {
    let log = dir.join(name);
    chromium(
        dir,
        page,
        &[
            format!("--log-net-log={}", log.display()),
            "--dump-dom".into(),
        ],
    );
    page_requests(&log)
}

#[test]
fn the_report_of_a_build_renders_one_bar_per_compile_and_fetches_nothing() {
    if !have("chromium") {
        skip("chromium is not installed: the report was not rendered");
        return;
    }
    let env = Env::new();
    let dir = env.work.join("proj");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cproject"),
        &dir,
    );
    for out in ["out1", "out2"] {
        let status = env
            .command("make")
            .current_dir(&dir)
            .args(["-j3", &format!("CC={CACHET} gcc"), &format!("OUT={out}")])
            .stdout(discard(env.dir.path(), "make.out"))
            .status()
            .unwrap();
        assert!(status.success());
        env.ok(&["--flush"]);
    }
    let page: PathBuf = env.dir.path().join("report.html");
    let out = env.ok(&["report", "--output", page.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote "));

    // The DOM as Chromium built it: one bar per compile, with its outcome.
    let dom = chromium(env.dir.path(), &page, &["--dump-dom".into()]);
    assert_eq!(dom.matches("class=\"compile\"").count(), 14, "{dom}");
    assert_eq!(dom.matches("data-outcome=\"miss\"").count(), 6);
    assert_eq!(dom.matches("data-outcome=\"hit\"").count(), 6);
    assert_eq!(dom.matches("data-outcome=\"uncacheable\"").count(), 2);
    assert!(
        dom.contains("first compile of this output"),
        "the top miss reasons"
    );

    // A screenshot with the bars' colours in it.
    let shot = env.dir.path().join("report.png");
    chromium(
        env.dir.path(),
        &page,
        &[format!("--screenshot={}", shot.display())],
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let pixels = &pixels[..frame.buffer_size()];
    let step = frame.color_type.samples();
    let has = |rgb: [u8; 3]| pixels.chunks(step).any(|p| p[..3] == rgb);
    assert!(has([0x2e, 0x9d, 0x4f]), "no hit bar in the screenshot");
    assert!(has([0xe8, 0x84, 0x3b]), "no miss bar in the screenshot");
    let distinct: std::collections::HashSet<&[u8]> = pixels.chunks(step).collect();
    assert!(distinct.len() > 20, "a blank screenshot");

    // No request from the page; the check sees one when a page makes it.
    assert_eq!(
        net_log(env.dir.path(), &page, "net.json"),
        Vec::<String>::new()
    );
    let fetching = env.dir.path().join("fetching.html");
    std::fs::write(&fetching, "<img src=\"http://127.0.0.1:9/x.png\">").unwrap();
    assert_eq!(
        net_log(env.dir.path(), &fetching, "net2.json"),
        ["http://127.0.0.1:9/x.png"]
    );
}
