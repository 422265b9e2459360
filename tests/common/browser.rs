//! Headless Chromium for the tests that need a real browser (the status
//! page, its charts, CORS from a page): finding it, where screenshots go,
//! and one run with the flags every such test needs.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// The browser, or `None` outside CI when none is installed (the test
/// then says it skipped `what`). In CI a missing browser fails the test.
pub fn chromium(what: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed; CI must run the browser test"
        );
        eprintln!("SKIPPED {what}: chromium not found (apt-get install chromium)");
    }
    found
}

/// `target/test-artifacts/NAME`, its folder made and any older file of
/// that name removed, so a screenshot found there is this run's.
pub fn artifact(name: &str) -> PathBuf {
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|target| target.join("test-artifacts"))
        .unwrap_or_else(|| PathBuf::from("target/test-artifacts"));
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let file = artifacts.join(name);
    let _ = std::fs::remove_file(&file);
    file
}

/// Loads `url` in `browser`, headless, in a fresh profile, with nothing
/// reaching the network but the page, plus the test's own `flags`
/// (`--screenshot=…`, `--dump-dom`, a window size); what it printed, within
/// 120 s.
pub async fn headless(browser: &Path, flags: &[String], url: &str) -> Output {
    let profile = tempfile::tempdir().expect("profile dir");
    let run = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("chromium finished within 120s")
        .expect("chromium ran")
}
