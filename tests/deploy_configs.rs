//! Every plugin configuration the project ships (the bootstraps' JSON, the
//! Istio and Envoy Gateway manifests, the JSON in docs/) goes through the
//! filter's own `Config::parse`, and the deployment ones say the same thing
//! as envoy-config/production-plugin-config.json but for the cluster name,
//! which each platform names its own way. So docs, manifests and code cannot
//! drift apart unnoticed.

use hokusai_mlflow_auth::Config;
use serde::Deserialize;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_file(rel: &str) -> Value {
    serde_json::from_str(&read(&root().join(rel))).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

/// (where, kind, plugin config) for every plugin config in deploy/.
fn manifest_configs() -> Vec<(String, String, Value)> {
    let mut files = Vec::new();
    yaml_files(&root().join("deploy"), &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = read(&file);
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let doc = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} document {i}: {e}", file.display()));
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let at = format!("{} document {i} ({kind})", file.display());
            match kind.as_str() {
                "WasmPlugin" => found.push((at, kind, doc["spec"]["pluginConfig"].clone())),
                "EnvoyExtensionPolicy" => {
                    // The .wasm's entries and the native build's.
                    for field in ["wasm", "dynamicModule"] {
                        let entries = doc["spec"][field].as_array().cloned().unwrap_or_default();
                        for (j, w) in entries.into_iter().enumerate() {
                            let at = format!("{at} {field}[{j}]");
                            found.push((at, kind.clone(), w["config"].clone()));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// Fenced ```json blocks in docs/*.md that configure the filter (have "auth").
fn doc_configs() -> Vec<(String, Value)> {
    let mut found = Vec::new();
    let mut docs: Vec<_> = fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for path in docs {
        let text = read(&path);
        let mut lines = text.lines().enumerate();
        while let Some((n, line)) = lines.next() {
            if line.trim() != "```json" {
                continue;
            }
            let block: Vec<&str> = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| l.trim() != "```")
                .collect();
            let block = block.join("\n");
            if block.contains("\"auth\"") {
                let at = format!("{}:{}", path.display(), n + 1);
                let v = serde_json::from_str(&block).unwrap_or_else(|e| panic!("{at}: {e}"));
                found.push((at, v));
            }
        }
    }
    found
}

fn parse(at: &str, v: &Value) -> Config {
    Config::parse(&serde_json::to_vec(v).unwrap())
        .unwrap_or_else(|e| panic!("{at}: Config::parse refused it: {e}"))
}

#[test]
fn every_shipped_plugin_config_parses() {
    let mut all: Vec<(String, Value)> = vec![
        (
            "envoy-config/plugin-config.json".into(),
            json_file("envoy-config/plugin-config.json"),
        ),
        (
            "envoy-config/production-plugin-config.json".into(),
            json_file("envoy-config/production-plugin-config.json"),
        ),
    ];
    let manifests = manifest_configs();
    // A moved or renamed manifest must not make this test pass on nothing.
    for kind in ["WasmPlugin", "EnvoyExtensionPolicy"] {
        assert!(
            manifests.iter().any(|(_, k, _)| k == kind),
            "no {kind} plugin config found under deploy/"
        );
    }
    assert!(
        manifests
            .iter()
            .any(|(at, _, _)| at.contains("dynamicModule[0]")),
        "no native (dynamicModule) plugin config found under deploy/"
    );
    let docs = doc_configs();
    assert!(!docs.is_empty(), "no JSON plugin config found in docs/");
    all.extend(manifests.into_iter().map(|(at, _, v)| (at, v)));
    all.extend(docs);
    for (at, v) in &all {
        parse(at, v);
    }
}

#[test]
fn manifests_say_what_the_production_config_says_but_for_the_cluster() {
    let production = parse(
        "production-plugin-config.json",
        &json_file("envoy-config/production-plugin-config.json"),
    );
    for (at, kind, mut v) in manifest_configs() {
        let want_cluster = match kind.as_str() {
            // Istio's name for the ServiceEntry's cluster (deploy/istio/auth-service.yaml).
            "WasmPlugin" => "outbound|443||auth.hokusai.internal",
            // The EnvoyPatchPolicy's cluster (deploy/envoy-gateway/auth-backend.yaml).
            _ => "hokusai_auth",
        };
        let c = parse(&at, &v);
        for p in c.policies() {
            assert_eq!(p.auth.cluster, want_cluster, "{at}: {}", p.name);
        }
        v["auth"]["cluster"] = production.policy.auth.cluster.clone().into();
        assert_eq!(
            parse(&at, &v),
            production,
            "{at} differs from production-plugin-config.json"
        );
    }
}
