//! The README's tour, run as printed against a fresh SQLite-mode service: every `curl`
//! line of the block under "A short tour" must succeed (`curl -f` fails on any 4xx or
//! 5xx). Only the address is changed, to the port the test's service got, and `TOKEN`
//! is set to its admin token.

use crate::service::{Service, TOKEN};

fn tour_lines() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("### A short tour")
        .expect("README has no \"A short tour\" section");
    let block = &readme[start..];
    let open = block.find("```sh\n").expect("the tour has no sh block") + "```sh\n".len();
    let close = block[open..]
        .find("```")
        .expect("the tour block is not closed");
    block[open..open + close]
        .lines()
        .filter(|l| l.starts_with("curl "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_readme_tour_runs_as_printed() {
    let mut s = Service::start(&[]).await;
    let lines = tour_lines();
    assert!(lines.len() >= 10, "the tour lost its lines: {lines:?}");
    for line in &lines {
        let line = line.replace("127.0.0.1:8000", s.addr());
        let out = tokio::process::Command::new("bash")
            .args(["-c", &line])
            .env("TOKEN", TOKEN)
            .output()
            .await
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{line}\nfailed with {:?}: {stdout}",
            out.status
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&stdout).is_ok(),
            "{line}\nanswered something other than JSON: {stdout}"
        );
    }
    // The message posted in the tour left its summary task, visible to the admin.
    let tasks = s.admin(reqwest::Method::GET, "/admin/tasks").await;
    assert_eq!(
        tasks.body["tasks"].as_array().map(Vec::len),
        Some(1),
        "{}",
        tasks.body
    );
    s.assert_alive().await;
}
