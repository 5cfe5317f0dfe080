//! docs/ARCHITECTURE.md's crate map and dependency graph against `cargo metadata`: the
//! document is the contract, so it must say what the manifests say.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// `crate -> {dependency or dependency?feature}` as the document writes it.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md");
    std::fs::read_to_string(path).unwrap()
}

fn documented_graph(doc: &str) -> Graph {
    let block = doc
        .split_once("<!-- deps:begin -->")
        .and_then(|(_, rest)| rest.split_once("<!-- deps:end -->"))
        .map(|(block, _)| block)
        .expect("docs/ARCHITECTURE.md has a <!-- deps:begin --> ... <!-- deps:end --> block");
    block
        .lines()
        .filter_map(|line| line.split_once("->"))
        .map(|(name, deps)| {
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect();
            (name.trim().to_owned(), deps)
        })
        .collect()
}

/// The floor of each crate in the crate map table (`| 3 | cortex-pool | ...`).
fn documented_floors(doc: &str) -> BTreeMap<String, u32> {
    doc.lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let floor = cells.next()?.parse().ok()?;
            let name = cells.next()?.strip_prefix("cortex-")?;
            Some((format!("cortex-{name}"), floor))
        })
        .collect()
}

fn manifest_graph() -> Graph {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut graph = Graph::new();
    for package in meta["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        let features = package["features"].as_object().unwrap();
        let mut deps = BTreeSet::new();
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            // Normal dependencies only: dev and build dependencies are not the graph.
            if !dep_name.starts_with("cortex-") || !dep["kind"].is_null() {
                continue;
            }
            if dep["optional"].as_bool() == Some(true) {
                let enabling: Vec<&String> = features
                    .iter()
                    .filter(|(_, list)| {
                        list.as_array()
                            .unwrap()
                            .iter()
                            .any(|f| f.as_str() == Some(&format!("dep:{dep_name}")))
                    })
                    .map(|(feature, _)| feature)
                    .collect();
                let feature = match enabling.as_slice() {
                    [one] => one.as_str(),
                    // No `dep:` entry: cargo's implicit feature named after the dependency.
                    [] => dep_name,
                    many => panic!("{name}: {dep_name} is turned on by several features {many:?}"),
                };
                deps.insert(format!("{dep_name}?{feature}"));
            } else {
                deps.insert(dep_name.to_owned());
            }
        }
        graph.insert(name, deps);
    }
    graph
}

#[test]
fn the_documented_dependency_graph_is_the_manifests_graph() {
    let documented = documented_graph(&doc());
    let actual = manifest_graph();
    assert_eq!(
        documented, actual,
        "update the deps block of docs/ARCHITECTURE.md to the manifests' graph"
    );
}

#[test]
fn every_dependency_points_to_a_lower_floor() {
    let doc = doc();
    let floors = documented_floors(&doc);
    let graph = manifest_graph();
    for (name, deps) in &graph {
        let floor = floors
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing from the crate map"));
        for dep in deps {
            let dep = dep.split('?').next().unwrap();
            let dep_floor = floors[dep];
            assert!(
                dep_floor < *floor,
                "{name} (floor {floor}) depends on {dep} (floor {dep_floor})"
            );
        }
    }
    assert_eq!(
        floors.keys().collect::<BTreeSet<_>>(),
        graph.keys().collect::<BTreeSet<_>>(),
        "the crate map lists exactly the workspace's crates"
    );
}

/// The crates of `package`'s normal dependency tree (with `args`, e.g. features).
fn tree(package: &str, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn light_crates_do_not_pull_drivers() {
    let heavy = [
        "sqlx",
        "sqlx-core",
        "bb8",
        "redis",
        "libsqlite3-sys",
        "hyper",
        "clap",
    ];
    let light: [(&str, &[&str]); 5] = [
        ("cortex-support", &[]),
        ("cortex-metrics", &[]),
        ("cortex-batch", &[]),
        ("cortex-cache", &["--no-default-features"]),
        ("cortex-tasks", &["--no-default-features"]),
    ];
    for (package, args) in light {
        let deps = tree(package, args);
        for h in heavy {
            assert!(!deps.contains(h), "{package} {args:?} pulls {h}");
        }
    }
    // cortex-mcp calls services over HTTP: hyper is expected, databases are not.
    let mcp = tree("cortex-mcp", &[]);
    for h in ["sqlx", "sqlx-core", "bb8", "redis", "libsqlite3-sys"] {
        assert!(!mcp.contains(h), "cortex-mcp pulls {h}");
    }
    let dbtune = tree("cortex-dbtune", &["--no-default-features"]);
    assert!(
        !dbtune.contains("clap"),
        "cortex-dbtune's library pulls clap"
    );
}
