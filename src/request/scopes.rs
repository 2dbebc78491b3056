//! Which keys may call which MLflow endpoint, by the endpoint's class.

use crate::config::ScopeConfig;
use crate::request::endpoints::Class;
use crate::verdict::key_service::Identity;

/// Ok, or the 403 message naming the scopes required and the key's own.
pub fn check(class: Class, id: &Identity, cfg: &ScopeConfig) -> Result<(), String> {
    if id.is_admin {
        return Ok(());
    }
    let (what, required): (&str, &[String]) = match class {
        Class::Read if cfg.read.is_empty() => return Ok(()),
        Class::Read => ("read", &cfg.read),
        Class::Write => ("write", &cfg.write),
        Class::RegistryWrite if cfg.registry_writes_admin_only => {
            ("model registry write", &cfg.admin)
        }
        Class::RegistryWrite => ("model registry write", &cfg.write),
        Class::Admin => ("admin", &cfg.admin),
    };
    // A key that may write may also read; admin scopes grant everything.
    let granted = |list: &[String]| id.scopes.iter().any(|s| list.contains(s));
    let ok =
        granted(required) || granted(&cfg.admin) || (class == Class::Read && granted(&cfg.write));
    if ok {
        return Ok(());
    }
    Err(format!(
        "this API key may not {what} here: it needs one of the scopes [{}]; it has [{}]",
        required.join(", "),
        id.scopes.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn scopes(extra: &str) -> ScopeConfig {
        Config::parse(
            format!(r#"{{"auth": {{"cluster": "a", "service_id": "p"}}{extra}}}"#).as_bytes(),
        )
        .unwrap()
        .policy
        .scopes
    }

    fn key(scopes: &[&str], admin: bool) -> Identity {
        Identity {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            is_admin: admin,
            ..Identity::default()
        }
    }

    #[test]
    fn reads_need_only_a_valid_key_by_default() {
        assert!(check(Class::Read, &key(&[], false), &scopes("")).is_ok());
    }

    #[test]
    fn writes_need_a_write_scope() {
        let cfg = scopes("");
        let ro = key(&["mlflow:read"], false);
        let err = check(Class::Write, &ro, &cfg).unwrap_err();
        assert!(
            err.contains("mlflow:write") && err.contains("[mlflow:read]"),
            "{err}"
        );
        for s in [
            "mlflow:write",
            "model:write",
            "mlflow:admin",
            "admin",
            "write",
            "full_access",
            "mlflow:access",
        ] {
            assert!(check(Class::Write, &key(&[s], false), &cfg).is_ok(), "{s}");
            assert!(
                check(Class::RegistryWrite, &key(&[s], false), &cfg).is_ok(),
                "{s}"
            );
        }
    }

    #[test]
    fn admin_endpoints_need_admin() {
        let cfg = scopes("");
        assert!(check(Class::Admin, &key(&["mlflow:write"], false), &cfg).is_err());
        assert!(check(Class::Admin, &key(&["mlflow:admin"], false), &cfg).is_ok());
        assert!(check(Class::Admin, &key(&[], true), &cfg).is_ok());
    }

    #[test]
    fn registry_writes_can_be_reserved_for_admins() {
        let cfg = scopes(r#", "scopes": {"registry_writes_admin_only": true}"#);
        let rw = key(&["mlflow:write"], false);
        assert!(check(Class::Write, &rw, &cfg).is_ok());
        let err = check(Class::RegistryWrite, &rw, &cfg).unwrap_err();
        assert!(
            err.contains("model registry write") && err.contains("mlflow:admin"),
            "{err}"
        );
        assert!(check(Class::RegistryWrite, &key(&[], true), &cfg).is_ok());
    }

    #[test]
    fn configured_read_scopes_are_enforced_and_writers_may_read() {
        let cfg = scopes(r#", "scopes": {"read": ["mlflow:read"]}"#);
        assert!(check(Class::Read, &key(&[], false), &cfg).is_err());
        assert!(check(Class::Read, &key(&["mlflow:read"], false), &cfg).is_ok());
        assert!(check(Class::Read, &key(&["mlflow:write"], false), &cfg).is_ok());
    }
}
