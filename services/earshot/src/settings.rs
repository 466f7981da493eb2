//! The `earshot` binary's settings: the database's, the API's and the
//! loader's sections, each defined and checked by the crate that uses it.

use earshot_loader::LoaderSettings;
use earshot_platform::config::{self, ConfigError};
use earshot_platform::DatabaseSettings;
use earshot_reporting::ApiSettings;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub api: ApiSettings,
    pub loader: LoaderSettings,
}

/// The sections and their variables.
const SECTIONS: [config::Section; 3] = [
    ("database", DatabaseSettings::ENV),
    ("api", ApiSettings::ENV),
    ("loader", LoaderSettings::ENV),
];

impl Settings {
    /// Defaults, then the TOML file named by `EARSHOT_CONFIG` (sections
    /// `[database]`, `[api]`, `[loader]`), then the `EARSHOT_…` variables,
    /// `DATABASE_URL` and `REDIS_URL`.
    pub fn load() -> Result<Self, ConfigError> {
        config::load(&SECTIONS)
    }

    #[cfg(test)]
    fn load_from(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        config::load_from(get, &SECTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_from(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let d = load(&[]).unwrap();
        assert_eq!(d.api.addr, earshot_reporting::settings::DEFAULT_API_ADDR);
        assert!(d.api.redis_url.is_none());
        let dir = earshot_testkit::temp_dir("cfg");
        let file = dir.join("earshot.toml");
        std::fs::write(
            &file,
            "[api]\naddr = \"127.0.0.1:9000\"\n[loader]\nretention_days = 30\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let s = load(&[
            ("EARSHOT_CONFIG", f),
            ("EARSHOT_RETENTION_DAYS", "60"),
            ("REDIS_URL", "redis://x"),
        ])
        .unwrap();
        assert_eq!(s.api.addr, "127.0.0.1:9000");
        assert_eq!(s.loader.retention_days, 60);
        assert_eq!(s.api.redis_url.unwrap().expose_secret(), "redis://x");
        assert_eq!(s.loader.addr, earshot_loader::settings::DEFAULT_LOADER_ADDR);
    }

    #[test]
    fn each_part_connects_with_its_own_url_else_database_url() {
        use earshot_platform::DbRole;
        let url = |s: &Settings, role| s.database.url_for(role).expose_secret().to_owned();
        let one = load(&[("DATABASE_URL", "postgres://all@db/e")]).unwrap();
        for role in [DbRole::Owner, DbRole::Loader, DbRole::Api] {
            assert_eq!(url(&one, role), "postgres://all@db/e");
        }
        let each = load(&[
            ("DATABASE_URL", "postgres://all@db/e"),
            ("EARSHOT_MIGRATE_DATABASE_URL", "postgres://owner@db/e"),
            ("EARSHOT_LOADER_DATABASE_URL", "postgres://loader@db/e"),
            ("EARSHOT_API_DATABASE_URL", "postgres://api@db/e"),
        ])
        .unwrap();
        assert_eq!(url(&each, DbRole::Owner), "postgres://owner@db/e");
        assert_eq!(url(&each, DbRole::Loader), "postgres://loader@db/e");
        assert_eq!(url(&each, DbRole::Api), "postgres://api@db/e");
        let api = each.database.as_role(DbRole::Api);
        assert_eq!(api.url.expose_secret(), "postgres://api@db/e");
        assert_eq!(api.max_connections, each.database.max_connections);
    }

    #[test]
    fn bad_values_say_which_field() {
        let e = load(&[("EARSHOT_RETENTION_DAYS", "forever")]).unwrap_err();
        assert!(e.to_string().contains("retention_days"), "{e}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = load(&[("DATABASE_URL", "postgres://u:hunter2@db/x")]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
