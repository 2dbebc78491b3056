//! Property tests over hostile input for every parser the filter runs on
//! request data or host answers: none may panic, and each keeps its promise.
//! `PROPTEST_CASES` raises the bounded CI run (scripts/fuzz.sh runs long).

use crate::config::Config;
use crate::request::credential::{self, Presented, QUERY_PARAM};
use crate::request::endpoints::EndpointTable;
use crate::request::rewrite;
use crate::verdict::cache;
use crate::verdict::key_service::{self, Verdict};
use proptest::prelude::*;

fn cfg() -> Config {
    Config::parse(br#"{"auth": {"cluster": "a", "service_id": "platform"}}"#).unwrap()
}

/// Bytes biased towards the characters that matter to these parsers.
fn tricky() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        any::<u8>().prop_map(|b| vec![b]),
        Just(b"%2f".to_vec()),
        Just(b"%2e".to_vec()),
        Just(b"/".to_vec()),
        Just(b"..".to_vec()),
        Just(b"api_key=".to_vec()),
        Just(b"api%5Fkey=".to_vec()),
        Just(b"api%5fke%79=".to_vec()),
        Just(b"api+key=".to_vec()),
        Just(b"&".to_vec()),
        Just(b"?".to_vec()),
        Just(b"Bearer ".to_vec()),
        Just(b"Basic ".to_vec()),
        Just(b"=".to_vec()),
        Just(b"/api/mlflow".to_vec()),
        Just(b"hk_test_k".to_vec()),
    ];
    proptest::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

proptest! {
    #[test]
    fn credential_parsing_never_panics_and_keys_are_clean(
        auth in proptest::collection::vec(tricky(), 0..3),
        xkey in proptest::collection::vec(tricky(), 0..2),
        query in proptest::option::of(tricky()),
    ) {
        let q = query.map(|q| lossy(&q));
        let mut p = Presented::default();
        p.authorization = auth.iter().map(|v| v.as_slice()).collect();
        p.x_api_key = xkey.iter().map(|v| v.as_slice()).collect();
        p.query = q.as_deref();
        if let Ok(c) = credential::extract(&p, &cfg().policy) {
            prop_assert!(!c.key.is_empty() && c.key.len() <= 256);
            prop_assert!(c.key.bytes().all(|b| b.is_ascii_graphic() && b != b','));
        }
    }

    #[test]
    fn query_stripping_removes_every_key_and_keeps_the_rest(query in tricky()) {
        let q = lossy(&query);
        let others: Vec<&str> = q
            .split('&')
            .filter(|p| !credential::param_name_is(p.split_once('=').map_or(*p, |(k, _)| k), QUERY_PARAM))
            .collect();
        match credential::remove_query_key(&q) {
            Some(stripped) => {
                prop_assert_eq!(credential::query_values(&stripped, QUERY_PARAM).count(), 0);
                prop_assert_eq!(stripped, others.join("&"));
            }
            None => {
                prop_assert_eq!(credential::query_values(&q, QUERY_PARAM).count(), 0);
                prop_assert_eq!(others.len(), q.split('&').count(), "a key pair was left in");
            }
        }
        // The values found are those a full parse finds (queries without the
        // name or an escape are not parsed at all).
        let parsed = form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k == QUERY_PARAM).count();
        prop_assert_eq!(credential::query_values(&q, QUERY_PARAM).count(), parsed);
    }

    #[test]
    fn path_rewriting_never_panics_and_accepted_paths_are_clean(path in tricky()) {
        let raw = lossy(&path);
        let (p, _q) = rewrite::split(&raw);
        if rewrite::is_unambiguous(p) {
            prop_assert!(p.starts_with('/'));
            prop_assert!(!p.contains("//") && !p.split('/').any(|s| s == ".." || s == "."));
            prop_assert!(!p.to_ascii_lowercase().contains("%2f"));
            let m = rewrite::strip_mount(p, &cfg().policy.mount_prefixes);
            prop_assert!(m.starts_with('/'));
            let _ = rewrite::ajax_map(m);
            let table = EndpointTable::builtin().unwrap();
            let _ = table.classify("POST", m);
        }
    }

    #[test]
    fn reply_parsing_never_panics_and_only_200_objects_allow(status in proptest::option::of(any::<u16>()), body in tricky()) {
        let v = key_service::verdict(status, body.len(), &body);
        if let Verdict::Allowed(id) = v {
            prop_assert_eq!(status, Some(200));
            for s in id.user_id.iter().chain(id.key_id.iter()) {
                prop_assert!(s.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }

    #[test]
    fn cache_entry_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), now in any::<u64>()) {
        let d = [0u8; 32];
        let found = cache::read_slot_for_tests(&bytes, &d, now, 1000);
        if bytes.len() < 42 {
            prop_assert!(!found);
        }
    }

    #[test]
    fn config_parsing_never_panics(json in tricky()) {
        let _ = Config::parse(&json);
    }
}
