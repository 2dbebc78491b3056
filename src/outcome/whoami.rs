//! `<mount>/_hokusai/whoami`: the filter answers itself, never MLflow, with
//! what it knows of the key it was shown (never the key), so that a client
//! or `verify` can see that the filter is in the path and what the key may
//! do on this route.

use crate::config::{Policy, Source};
use crate::outcome::reply::{window_headers, MARKER};
use crate::request::endpoints::Class;
use crate::request::scopes;
use crate::types::Reply;
use crate::types::Window;
use crate::verdict::key_service::Identity;
use serde::Serialize;

/// This build of the filter: its version, and the commit `scripts/setup.sh`
/// built it from (`HOKUSAI_BUILD`), else `dev`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const BUILD: &str = match option_env!("HOKUSAI_BUILD") {
    Some(b) => b,
    None => "dev",
};

/// What the reply is made of.
pub struct Whoami<'a> {
    pub id: &'a Identity,
    pub policy: &'a Policy,
    pub source: Option<Source>,
    pub window: Option<&'a Window>,
    /// The verdict came from the cache, not a callout.
    pub cached: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    key_id: Option<&'a str>,
    user_id: Option<&'a str>,
    scopes: &'a [String],
    is_admin: bool,
    access: Access,
    service_id: &'a str,
    route: &'a str,
    key_source: Option<&'static str>,
    rate_limit: Option<Limit>,
    cached: bool,
    filter: Build,
}

/// What the key may do on this route, by endpoint class.
#[derive(Serialize)]
struct Access {
    read: bool,
    write: bool,
    registry_write: bool,
    admin: bool,
}

#[derive(Serialize)]
struct Limit {
    limit: u64,
    remaining: u64,
    /// Unix seconds at which the hourly window ends.
    reset: u64,
}

#[derive(Serialize)]
struct Build {
    name: &'static str,
    version: &'static str,
    build: &'static str,
}

impl Whoami<'_> {
    pub fn reply(&self) -> Reply {
        let may = |class| scopes::check(class, self.id, &self.policy.scopes).is_ok();
        let body = Body {
            key_id: self.id.key_id.as_deref(),
            user_id: self.id.user_id.as_deref(),
            scopes: &self.id.scopes,
            is_admin: self.id.is_admin,
            access: Access {
                read: may(Class::Read),
                write: may(Class::Write),
                registry_write: may(Class::RegistryWrite),
                admin: may(Class::Admin),
            },
            service_id: &self.policy.auth.service_id,
            route: &self.policy.name,
            key_source: self.source.map(Source::as_str),
            rate_limit: self.window.map(|w| Limit {
                limit: w.limit,
                remaining: w.remaining,
                reset: w.reset_at,
            }),
            cached: self.cached,
            filter: Build {
                name: env!("CARGO_PKG_NAME"),
                version: VERSION,
                build: BUILD,
            },
        };
        let mut headers = self.window.map(window_headers).unwrap_or_default();
        headers.push((MARKER, "whoami".into()));
        headers.push(("content-type", "application/json".into()));
        headers.push(("cache-control", "no-store".into()));
        Reply {
            status: 200,
            headers,
            body: serde_json::to_string(&body).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_reply_says_who_and_what_but_never_the_key() {
        let cfg =
            Config::parse(br#"{"auth": {"cluster": "c", "service_id": "platform"}}"#).unwrap();
        let id = Identity {
            user_id: Some("u_1".into()),
            key_id: Some("k_1".into()),
            scopes: vec!["mlflow:read".into()],
            rate_limit_per_hour: Some(10),
            is_admin: false,
        };
        let window = Window {
            limit: 10,
            remaining: 9,
            reset_at: 3600,
            allowed: true,
        };
        let r = Whoami {
            id: &id,
            policy: &cfg.policy,
            source: Some(Source::Basic),
            window: Some(&window),
            cached: true,
        }
        .reply();
        assert_eq!(r.status, 200);
        assert!(r.headers.contains(&(MARKER, "whoami".into())));
        assert!(r.headers.contains(&("x-ratelimit-remaining", "9".into())));
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["key_id"], "k_1");
        assert_eq!(v["service_id"], "platform");
        assert_eq!(v["route"], "default");
        assert_eq!(v["key_source"], "basic");
        assert_eq!(v["access"]["read"], true);
        assert_eq!(v["access"]["write"], false);
        assert_eq!(v["rate_limit"]["remaining"], 9);
        assert_eq!(v["cached"], true);
        assert_eq!(v["filter"]["name"], "hokusai-mlflow-auth");
    }
}
