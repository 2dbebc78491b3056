//! Every plugin configuration the project ships (the bootstraps' JSON, the
//! Istio and Envoy Gateway manifests, the JSON in docs/) goes through the
//! filter's own `Config::parse`, and the deployment ones say the same thing
//! as envoy-config/production-plugin-config.json but for the cluster name,
//! which each platform names its own way. So docs, manifests and code cannot
//! drift apart unnoticed.
//!
//! Each config is parsed with the environment its platform gives the filter:
//! the identity assertion's signing key, read from the variable
//! `identity_assertion.signing_key_env` names, is set (to a test key) only
//! if the manifest or bootstrap hands that variable to the filter.

use hokusai_mlflow_auth::Config;
use serde::Deserialize;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// TEST FIXTURE, not a deployment key: RFC 8032 section 7.1 test 1's
/// published secret key as PKCS#8 PEM, standing in for the signing key.
const TEST_SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
-----END PRIVATE KEY-----
";

/// The environment variables a platform hands the filter, by name.
#[derive(Debug)]
enum Env {
    /// Exactly these (a manifest's or the bootstrap's).
    Only(Vec<String>),
    /// Whatever the config names (the local stack's, the docs' examples).
    Any,
}

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

/// A YAML list's items; none when absent.
fn items(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    let strs = items(v)
        .into_iter()
        .filter_map(|s| s.as_str().map(String::from));
    strs.collect()
}

/// The `name`s of a list of `{name, ...}`.
fn names<'a>(list: impl Iterator<Item = &'a Value>) -> Vec<String> {
    let names = list.filter_map(|e| e["name"].as_str().map(String::from));
    names.collect()
}

/// Every YAML document under deploy/, with where it is.
fn deploy_documents() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    yaml_files(&root().join("deploy"), &mut files);
    let mut docs = Vec::new();
    for file in files {
        let text = read(&file);
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let doc = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} document {i}: {e}", file.display()));
            docs.push((format!("{} document {i}", file.display()), doc));
        }
    }
    docs
}

/// The Envoy Gateway proxies' environment (an EnvoyProxy's container env)
/// where the EnvoyProxy allowlists the dynamic module `module`.
fn native_proxy_env(docs: &[(String, Value)], module: &str) -> Vec<String> {
    let proxy = docs.iter().map(|(_, d)| d).find(|d| {
        d["kind"] == "EnvoyProxy"
            && names(items(&d["spec"]["dynamicModules"]).iter()).contains(&module.to_string())
    });
    let container = &proxy.unwrap_or_else(|| panic!("no EnvoyProxy allowlists {module}"))["spec"]
        ["provider"]["kubernetes"]["envoyDeployment"]["container"];
    names(items(&container["env"]).iter())
}

/// (where, kind, plugin config, the variables handed to the filter) for
/// every plugin config in deploy/.
fn manifest_configs() -> Vec<(String, String, Value, Env)> {
    let docs = deploy_documents();
    let mut found = Vec::new();
    for (at, doc) in &docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let at = format!("{at} ({kind})");
        let spec = &doc["spec"];
        match kind.as_str() {
            "WasmPlugin" => {
                // Istio's vmConfig.env: HOST passes the proxy's own variable.
                let env = items(&spec["vmConfig"]["env"]);
                let env = Env::Only(names(env.iter().filter(|e| e["valueFrom"] == "HOST")));
                found.push((at, kind, spec["pluginConfig"].clone(), env));
            }
            "EnvoyExtensionPolicy" => {
                // The .wasm gets hostKeys; the native module reads the
                // process environment its EnvoyProxy sets.
                for (j, w) in items(&spec["wasm"]).into_iter().enumerate() {
                    let env = Env::Only(strings(&w["env"]["hostKeys"]));
                    let at = format!("{at} wasm[{j}]");
                    found.push((at, kind.clone(), w["config"].clone(), env));
                }
                for (j, m) in items(&spec["dynamicModule"]).into_iter().enumerate() {
                    let env = Env::Only(native_proxy_env(&docs, m["name"].as_str().unwrap()));
                    let at = format!("{at} dynamicModule[{j}]");
                    found.push((at, kind.clone(), m["config"].clone(), env));
                }
            }
            _ => {}
        }
    }
    found
}

/// The variables production.yaml hands the .wasm from Envoy's environment
/// (`vm_config.environment_variables.host_env_keys`); the native bootstrap
/// reads the same process environment.
fn production_env() -> Env {
    let mut text = read(&root().join("envoy-config/production.yaml"));
    // The deploy-time placeholders, filled as envsubst would.
    while let Some(start) = text.find("${") {
        let end = start + text[start..].find('}').unwrap();
        text.replace_range(start..=end, "0");
    }
    let boot: Value = serde_yaml::from_str(&text).unwrap();
    let listeners = boot["static_resources"]["listeners"].as_array().unwrap();
    let filters = listeners.iter().flat_map(|l| {
        let chains = l["filter_chains"].as_array().unwrap();
        chains.iter().flat_map(|c| {
            let http = &c["filters"][0]["typed_config"]["http_filters"];
            http.as_array().unwrap().clone()
        })
    });
    let hokusai: Vec<Value> = filters.filter(|f| f["name"] == "hokusai_auth").collect();
    assert_eq!(hokusai.len(), 1, "production.yaml: one hokusai_auth filter");
    let vm = &hokusai[0]["typed_config"]["config"]["vm_config"];
    Env::Only(strings(&vm["environment_variables"]["host_env_keys"]))
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

fn parse(at: &str, v: &Value, env: &Env) -> Config {
    let bytes = serde_json::to_vec(v).unwrap();
    let lookup = |name: &str| match env {
        Env::Any => Some(TEST_SIGNING_KEY.to_string()),
        Env::Only(names) => names
            .iter()
            .any(|n| n == name)
            .then(|| TEST_SIGNING_KEY.to_string()),
    };
    Config::parse_with_env(&bytes, &lookup)
        .unwrap_or_else(|e| panic!("{at}: Config::parse refused it: {e}"))
}

#[test]
fn every_shipped_plugin_config_parses() {
    let mut all: Vec<(String, Value, Env)> = vec![
        (
            "envoy-config/plugin-config.json".into(),
            json_file("envoy-config/plugin-config.json"),
            Env::Any,
        ),
        (
            "envoy-config/production-plugin-config.json".into(),
            json_file("envoy-config/production-plugin-config.json"),
            production_env(),
        ),
    ];
    let manifests = manifest_configs();
    // A moved or renamed manifest must not make this test pass on nothing.
    for kind in ["WasmPlugin", "EnvoyExtensionPolicy"] {
        assert!(
            manifests.iter().any(|(_, k, _, _)| k == kind),
            "no {kind} plugin config found under deploy/"
        );
    }
    assert!(
        manifests
            .iter()
            .any(|(at, _, _, _)| at.contains("dynamicModule[0]")),
        "no native (dynamicModule) plugin config found under deploy/"
    );
    let docs = doc_configs();
    assert!(!docs.is_empty(), "no JSON plugin config found in docs/");
    all.extend(manifests.into_iter().map(|(at, _, v, env)| (at, v, env)));
    all.extend(docs.into_iter().map(|(at, v)| (at, v, Env::Any)));
    for (at, v, env) in &all {
        parse(at, v, env);
    }
}

#[test]
fn shipped_deployment_configs_sign_and_are_refused_without_the_key() {
    let mut all = vec![(
        "production-plugin-config.json".to_string(),
        json_file("envoy-config/production-plugin-config.json"),
    )];
    all.extend(manifest_configs().into_iter().map(|(at, _, v, _)| (at, v)));
    for (at, v) in all {
        let var = v["identity_assertion"]["signing_key_env"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no identity_assertion.signing_key_env"));
        let err = Config::parse_with_env(&serde_json::to_vec(&v).unwrap(), &|_| None)
            .expect_err(&format!("{at}: parsed without its signing key"));
        let want = format!(
            "identity_assertion.signing_key_env: the environment variable {var} is not set"
        );
        assert_eq!(err, want, "{at}");
    }
}

#[test]
fn manifests_say_what_the_production_config_says_but_for_the_cluster() {
    let production = parse(
        "production-plugin-config.json",
        &json_file("envoy-config/production-plugin-config.json"),
        &production_env(),
    );
    for (at, kind, mut v, env) in manifest_configs() {
        let want_cluster = match kind.as_str() {
            // Istio's name for the ServiceEntry's cluster (deploy/istio/auth-service.yaml).
            "WasmPlugin" => "outbound|443||auth.hokusai.internal",
            // The EnvoyPatchPolicy's cluster (deploy/envoy-gateway/auth-backend.yaml).
            _ => "hokusai_auth",
        };
        let c = parse(&at, &v, &env);
        for p in c.policies() {
            assert_eq!(p.auth.cluster, want_cluster, "{at}: {}", p.name);
        }
        v["auth"]["cluster"] = production.policy.auth.cluster.clone().into();
        assert_eq!(
            parse(&at, &v, &env),
            production,
            "{at} differs from production-plugin-config.json"
        );
    }
}
