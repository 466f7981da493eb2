//! The edge's configuration: read once from the environment at start-up; a
//! bad or missing variable stops the process with a message naming it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use earshot_domain::signing::KeysError;
use earshot_domain::{ListenerPeriod, ListenerSecret, SigningKeys};

/// Local mode's listen address when `EARSHOT_EDGE_ADDR` is unset.
pub const DEFAULT_EDGE_ADDR: &str = "127.0.0.1:8787";
/// Local mode's sink when `EARSHOT_SINK` is unset.
pub const DEFAULT_LOCAL_SINK: &str = "dir:./data/events";
/// Listener ids live a UTC month unless `EARSHOT_LISTENER_PERIOD` says
/// otherwise: OP3's window, in which a month's reach is exact.
pub const DEFAULT_LISTENER_PERIOD: ListenerPeriod = ListenerPeriod::Month;
/// Local mode only: a fixed secret so listener ids are stable across
/// restarts on a laptop. Never used under Lambda.
const DEV_LISTENER_SECRET: &str = "earshot-dev-listener-secret-not-for-production";
/// Buffered mode defaults: flush at this many events or this age, whichever
/// comes first. 1,000 events of ~450 bytes pack into one ~450 KB record.
pub const DEFAULT_BUFFER_MAX_EVENTS: usize = 1000;
pub const DEFAULT_BUFFER_MAX_AGE: Duration = Duration::from_millis(1000);
/// Attempts per Firehose batch (first try plus retries) before dead-lettering.
pub const DEFAULT_FIREHOSE_MAX_ATTEMPTS: u32 = 6;
/// More trusted proxies than this is a misconfiguration (CloudFront in front
/// of an ALB is two).
pub const MAX_TRUSTED_PROXY_HOPS: usize = 8;
/// Trust variables this edge does not read, and what to set instead: an
/// operator who sets one expects it to act, so it stops the edge rather than
/// being ignored.
const RETIRED_TRUST_VARIABLES: [(&str, &str); 2] = [
    (
        "EARSHOT_TRUST_FORWARDED",
        "set EARSHOT_TRUSTED_PROXY_HOPS to the number of proxies in front of the edge",
    ),
    (
        "EARSHOT_TRUST_DEVICE_HEADERS",
        "device headers are believed only when signed with a key of EARSHOT_SSAI_KEYS",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMode {
    /// Under the Lambda runtime (`AWS_LAMBDA_RUNTIME_API` is set).
    Lambda,
    /// A local HTTP server.
    Local { addr: SocketAddr },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    Firehose { stream: String },
    Dir { path: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Each hit returns after its event is acknowledged.
    Sync,
    /// Hits return at once; events are flushed by size or age, and on shutdown.
    Buffered {
        max_events: usize,
        max_age: Duration,
    },
}

/// Which request headers are believed about the client. Nothing by default:
/// a header is only as trustworthy as whatever sits in front of the function.
#[derive(Debug, Clone, Default)]
pub struct TrustConfig {
    /// Proxies in front of the function that each append the address they
    /// saw to `X-Forwarded-For`: the client is the entry this many places
    /// from the right. 0: the platform's source address.
    pub proxy_hops: usize,
    /// The function is reachable only through CloudFront (origin access
    /// control): `CloudFront-Viewer-Address` and `CloudFront-Viewer-Country`
    /// come from CloudFront, not from the client.
    pub cloudfront: bool,
    /// Ad servers allowed to name the player in `X-Device-IP` /
    /// `X-Device-User-Agent`, each with its own key (`earshot_domain::ssai`).
    pub ssai_keys: SigningKeys,
}

/// Where geography and data-center networks come from (`crate::geo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    /// `EARSHOT_GEO_DB`: a MaxMind-format country or City file used instead
    /// of the compiled-in country database (a City file adds regions).
    pub db: Option<PathBuf>,
    /// `EARSHOT_DATACENTER_FILE`: more data-center networks and AS numbers,
    /// one per line.
    pub datacenter_file: Option<PathBuf>,
    /// `EARSHOT_ASN_DB`: the ASN database that AS numbers of the data-center
    /// file are matched through.
    pub asn_db: Option<PathBuf>,
    /// `EARSHOT_DATACENTER_BUILTIN` (default true): whether the compiled-in
    /// data-center list applies.
    pub builtin_datacenters: bool,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self {
            db: None,
            datacenter_file: None,
            asn_db: None,
            builtin_datacenters: true,
        }
    }
}

/// Pixel URL signatures.
#[derive(Debug, Clone, Default)]
pub struct SigningConfig {
    pub keys: SigningKeys,
    /// Unsigned or badly signed hits are recorded as invalid.
    pub required: bool,
}

/// The secrets behind listener ids, and how long an id lives.
#[derive(Debug)]
pub struct ListenerConfig {
    pub secret: ListenerSecret,
    /// `EARSHOT_LISTENER_PERIOD`: `day` or `month`.
    pub period: ListenerPeriod,
    /// A scheduled rotation (`EARSHOT_LISTENER_SECRET_NEXT=YYYY-MM-DD:secret`):
    /// from that UTC day on, listener ids use the next secret. The day
    /// starts a period (the 1st, with monthly ids), so no period's ids are
    /// split between two secrets.
    pub next: Option<(time::Date, ListenerSecret)>,
    /// True when the dev default secret is in use (local mode only).
    pub is_dev_default: bool,
}

/// How events reach Firehose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Attempts per batch, the first included, before dead-lettering (the
    /// invocation's deadline may end them sooner).
    pub max_attempts: u32,
    pub tls_roots: TlsRoots,
}

#[derive(Debug)]
pub struct EdgeConfig {
    pub mode: RunMode,
    pub sink: SinkConfig,
    pub flush: FlushMode,
    pub delivery: DeliveryConfig,
    pub listener: ListenerConfig,
    pub signing: SigningConfig,
    pub trust: TrustConfig,
    pub geo: GeoConfig,
    /// A folder of newer OPAWG lists, each replacing its compiled-in copy.
    pub ua_patterns_dir: Option<PathBuf>,
}

/// Which root certificates the Firehose client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRoots {
    /// The roots AWS endpoints chain to (`certs/`): no certificate store is
    /// read at start-up.
    Aws,
    /// The host's certificate store (read and parsed at start-up).
    System,
}

/// A variable that is missing or wrong, by name.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

fn parse_bool(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(err(
            var,
            format!("{v:?} is not a boolean (use true or false)"),
        )),
    }
}

fn parse_num<T>(var: &'static str, v: &str, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let n: T = v
        .trim()
        .parse()
        .map_err(|_| err(var, format!("{v:?} is not a number")))?;
    if n < min {
        return Err(err(var, format!("{n} is below the minimum {min}")));
    }
    Ok(n)
}

impl EdgeConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Builds the configuration from any variable source (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mode = if get("AWS_LAMBDA_RUNTIME_API").is_some() {
            RunMode::Lambda
        } else {
            let addr = get("EARSHOT_EDGE_ADDR").unwrap_or_else(|| DEFAULT_EDGE_ADDR.into());
            let addr = addr
                .parse()
                .map_err(|_| err("EARSHOT_EDGE_ADDR", format!("{addr:?} is not host:port")))?;
            RunMode::Local { addr }
        };
        let lambda = mode == RunMode::Lambda;

        let sink_spec = get("EARSHOT_SINK").unwrap_or_else(|| {
            if lambda {
                "firehose".into()
            } else {
                DEFAULT_LOCAL_SINK.into()
            }
        });
        let sink = if sink_spec == "firehose" {
            let stream = get("EARSHOT_FIREHOSE_STREAM").ok_or_else(|| {
                err(
                    "EARSHOT_FIREHOSE_STREAM",
                    "required when EARSHOT_SINK=firehose",
                )
            })?;
            SinkConfig::Firehose { stream }
        } else if let Some(path) = sink_spec.strip_prefix("dir:") {
            if path.is_empty() {
                return Err(err(
                    "EARSHOT_SINK",
                    "dir: needs a path, e.g. dir:./data/events",
                ));
            }
            SinkConfig::Dir { path: path.into() }
        } else {
            return Err(err(
                "EARSHOT_SINK",
                format!("{sink_spec:?} is not `firehose` or `dir:PATH`"),
            ));
        };

        let flush = match get("EARSHOT_FLUSH").as_deref().unwrap_or("sync") {
            "sync" => FlushMode::Sync,
            "buffered" => FlushMode::Buffered {
                max_events: match get("EARSHOT_BUFFER_MAX_EVENTS") {
                    Some(v) => parse_num("EARSHOT_BUFFER_MAX_EVENTS", &v, 1usize)?,
                    None => DEFAULT_BUFFER_MAX_EVENTS,
                },
                max_age: match get("EARSHOT_BUFFER_MAX_AGE_MS") {
                    Some(v) => {
                        Duration::from_millis(parse_num("EARSHOT_BUFFER_MAX_AGE_MS", &v, 1u64)?)
                    }
                    None => DEFAULT_BUFFER_MAX_AGE,
                },
            },
            other => {
                return Err(err(
                    "EARSHOT_FLUSH",
                    format!("{other:?} is not `sync` or `buffered`"),
                ))
            }
        };

        // A custom endpoint (an emulator, a proxy) may present any CA: the
        // host's store then, unless told otherwise.
        let custom_endpoint =
            get("AWS_ENDPOINT_URL").is_some() || get("AWS_ENDPOINT_URL_FIREHOSE").is_some();
        let tls_roots = match get("EARSHOT_TLS_ROOTS").as_deref() {
            None if custom_endpoint => TlsRoots::System,
            None | Some("aws") => TlsRoots::Aws,
            Some("system") => TlsRoots::System,
            Some(other) => {
                return Err(err(
                    "EARSHOT_TLS_ROOTS",
                    format!("{other:?} is not `aws` or `system`"),
                ))
            }
        };

        let (listener_secret, listener_secret_is_dev_default) = match get("EARSHOT_LISTENER_SECRET")
        {
            Some(s) => (
                ListenerSecret::new(s)
                    .map_err(|e| err("EARSHOT_LISTENER_SECRET", e.to_string()))?,
                false,
            ),
            None if lambda => {
                return Err(err(
                    "EARSHOT_LISTENER_SECRET",
                    "required under Lambda (listener ids would be guessable without it)",
                ))
            }
            None => (
                ListenerSecret::new(DEV_LISTENER_SECRET).expect("dev secret is long enough"),
                true,
            ),
        };

        let listener_period = match get("EARSHOT_LISTENER_PERIOD") {
            Some(v) => v
                .trim()
                .parse::<ListenerPeriod>()
                .map_err(|e| err("EARSHOT_LISTENER_PERIOD", e.to_string()))?,
            None => DEFAULT_LISTENER_PERIOD,
        };

        let listener_secret_next = match get("EARSHOT_LISTENER_SECRET_NEXT") {
            None => None,
            Some(v) => {
                const VAR: &str = "EARSHOT_LISTENER_SECRET_NEXT";
                let (day, secret) = v.split_once(':').ok_or_else(|| {
                    err(
                        VAR,
                        "expected YYYY-MM-DD:secret (the UTC day the next secret takes over)",
                    )
                })?;
                let day = time::Date::parse(
                    day.trim(),
                    &time::macros::format_description!("[year]-[month]-[day]"),
                )
                .map_err(|_| err(VAR, format!("{day:?} is not a date (YYYY-MM-DD)")))?;
                // Only a monthly period has days that do not start one.
                if listener_period.start(day) != day {
                    return Err(err(
                        VAR,
                        format!("{day} is not the 1st of a month (listener ids are monthly)"),
                    ));
                }
                Some((
                    day,
                    ListenerSecret::new(secret).map_err(|e| err(VAR, e.to_string()))?,
                ))
            }
        };

        let keys = SigningKeys::parse(&get("EARSHOT_SIGNING_KEYS").unwrap_or_default())
            .map_err(|e: KeysError| err("EARSHOT_SIGNING_KEYS", e.to_string()))?;
        let required = match get("EARSHOT_REQUIRE_SIGNATURE") {
            Some(v) => parse_bool("EARSHOT_REQUIRE_SIGNATURE", &v)?,
            None => !keys.is_empty(),
        };
        if required && keys.is_empty() {
            return Err(err(
                "EARSHOT_REQUIRE_SIGNATURE",
                "is true but EARSHOT_SIGNING_KEYS is empty: every hit would be invalid",
            ));
        }

        for (old, new) in RETIRED_TRUST_VARIABLES {
            if get(old).is_some() {
                return Err(err(old, format!("is no longer read: {new}")));
            }
        }
        let proxy_hops = match get("EARSHOT_TRUSTED_PROXY_HOPS") {
            Some(v) => parse_num("EARSHOT_TRUSTED_PROXY_HOPS", &v, 0usize)?,
            None => 0,
        };
        if proxy_hops > MAX_TRUSTED_PROXY_HOPS {
            return Err(err(
                "EARSHOT_TRUSTED_PROXY_HOPS",
                format!("{proxy_hops} is above the maximum {MAX_TRUSTED_PROXY_HOPS}"),
            ));
        }
        let trust = TrustConfig {
            proxy_hops,
            cloudfront: match get("EARSHOT_TRUST_CLOUDFRONT") {
                Some(v) => parse_bool("EARSHOT_TRUST_CLOUDFRONT", &v)?,
                None => false,
            },
            ssai_keys: SigningKeys::parse(&get("EARSHOT_SSAI_KEYS").unwrap_or_default())
                .map_err(|e| err("EARSHOT_SSAI_KEYS", e.to_string()))?,
        };

        let geo = GeoConfig {
            db: get("EARSHOT_GEO_DB").map(PathBuf::from),
            datacenter_file: get("EARSHOT_DATACENTER_FILE").map(PathBuf::from),
            asn_db: get("EARSHOT_ASN_DB").map(PathBuf::from),
            builtin_datacenters: match get("EARSHOT_DATACENTER_BUILTIN") {
                Some(v) => parse_bool("EARSHOT_DATACENTER_BUILTIN", &v)?,
                None => true,
            },
        };

        let ua_patterns_dir = get("EARSHOT_UA_PATTERNS_DIR").map(PathBuf::from);
        let max_attempts = match get("EARSHOT_FIREHOSE_MAX_ATTEMPTS") {
            Some(v) => parse_num("EARSHOT_FIREHOSE_MAX_ATTEMPTS", &v, 1u32)?,
            None => DEFAULT_FIREHOSE_MAX_ATTEMPTS,
        };

        Ok(Self {
            mode,
            sink,
            flush,
            delivery: DeliveryConfig {
                max_attempts,
                tls_roots,
            },
            listener: ListenerConfig {
                secret: listener_secret,
                period: listener_period,
                next: listener_secret_next,
                is_dev_default: listener_secret_is_dev_default,
            },
            signing: SigningConfig { keys, required },
            trust,
            geo,
            ua_patterns_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<EdgeConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EdgeConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn local_defaults_need_no_variables() {
        let c = cfg(&[]).unwrap();
        assert_eq!(
            c.mode,
            RunMode::Local {
                addr: "127.0.0.1:8787".parse().unwrap()
            }
        );
        assert_eq!(
            c.sink,
            SinkConfig::Dir {
                path: "./data/events".into()
            }
        );
        assert_eq!(c.flush, FlushMode::Sync);
        assert!(c.listener.is_dev_default);
        assert_eq!(c.listener.period, ListenerPeriod::Month);
        assert!(!c.signing.required);
        assert_eq!(
            (
                c.trust.proxy_hops,
                c.trust.cloudfront,
                c.trust.ssai_keys.is_empty()
            ),
            (0, false, true)
        );
        assert_eq!(c.ua_patterns_dir, None);
        assert_eq!(c.geo, GeoConfig::default());
        assert!(c.geo.builtin_datacenters);
    }

    #[test]
    fn geography_files_are_read_by_name() {
        let c = cfg(&[
            ("EARSHOT_GEO_DB", "/opt/geo/GeoLite2-City.mmdb"),
            ("EARSHOT_DATACENTER_FILE", "/opt/geo/datacenters.txt"),
            ("EARSHOT_ASN_DB", "/opt/geo/GeoLite2-ASN.mmdb"),
            ("EARSHOT_DATACENTER_BUILTIN", "false"),
        ])
        .unwrap();
        assert_eq!(
            c.geo,
            GeoConfig {
                db: Some("/opt/geo/GeoLite2-City.mmdb".into()),
                datacenter_file: Some("/opt/geo/datacenters.txt".into()),
                asn_db: Some("/opt/geo/GeoLite2-ASN.mmdb".into()),
                builtin_datacenters: false,
            }
        );
    }

    #[test]
    fn lambda_requires_a_secret_and_a_stream() {
        let e = cfg(&[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("EARSHOT_FIREHOSE_STREAM", "s"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "EARSHOT_LISTENER_SECRET");
        let e = cfg(&[
            ("AWS_LAMBDA_RUNTIME_API", "x"),
            ("EARSHOT_LISTENER_SECRET", "0123456789abcdef"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "EARSHOT_FIREHOSE_STREAM: required when EARSHOT_SINK=firehose"
        );
        let ok = cfg(&[
            ("AWS_LAMBDA_RUNTIME_API", "x"),
            ("EARSHOT_LISTENER_SECRET", "0123456789abcdef"),
            ("EARSHOT_FIREHOSE_STREAM", "events"),
        ])
        .unwrap();
        assert_eq!(
            ok.sink,
            SinkConfig::Firehose {
                stream: "events".into()
            }
        );
    }

    #[test]
    fn keys_turn_signature_checks_on_unless_told_otherwise() {
        let c = cfg(&[("EARSHOT_SIGNING_KEYS", "k1:0123456789abcdef")]).unwrap();
        assert!(c.signing.required);
        let c = cfg(&[
            ("EARSHOT_SIGNING_KEYS", "k1:0123456789abcdef"),
            ("EARSHOT_REQUIRE_SIGNATURE", "false"),
        ])
        .unwrap();
        assert!(!c.signing.required);
        let e = cfg(&[("EARSHOT_REQUIRE_SIGNATURE", "true")]).unwrap_err();
        assert_eq!(e.var, "EARSHOT_REQUIRE_SIGNATURE");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("EARSHOT_SINK", "kafka"),
            ("EARSHOT_FLUSH", "sometimes"),
            ("EARSHOT_EDGE_ADDR", "nowhere"),
            ("EARSHOT_SIGNING_KEYS", "k1"),
            ("EARSHOT_TRUST_CLOUDFRONT", "maybe"),
            ("EARSHOT_TRUSTED_PROXY_HOPS", "-1"),
            ("EARSHOT_TRUSTED_PROXY_HOPS", "9"),
            ("EARSHOT_SSAI_KEYS", "adsrv1:short"),
            ("EARSHOT_LISTENER_SECRET", "short"),
            ("EARSHOT_LISTENER_SECRET_NEXT", "tomorrow:0123456789abcdef"),
            ("EARSHOT_LISTENER_SECRET_NEXT", "2026-11-28"),
            ("EARSHOT_LISTENER_SECRET_NEXT", "2026-12-01:short"),
            (
                "EARSHOT_LISTENER_SECRET_NEXT",
                "2026-11-28:0123456789abcdef",
            ),
            ("EARSHOT_LISTENER_PERIOD", "week"),
            ("EARSHOT_TLS_ROOTS", "mozilla"),
            ("EARSHOT_DATACENTER_BUILTIN", "sometimes"),
        ] {
            assert_eq!(cfg(&[(var, value)]).unwrap_err().var, var, "{var}={value}");
        }
        let e = cfg(&[
            ("EARSHOT_FLUSH", "buffered"),
            ("EARSHOT_BUFFER_MAX_EVENTS", "0"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "EARSHOT_BUFFER_MAX_EVENTS: 0 is below the minimum 1"
        );
    }

    #[test]
    fn aws_roots_unless_a_custom_endpoint_or_told_otherwise() {
        assert_eq!(cfg(&[]).unwrap().delivery.tls_roots, TlsRoots::Aws);
        for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_FIREHOSE"] {
            let c = cfg(&[(var, "https://firehose.internal:8443")]).unwrap();
            assert_eq!(c.delivery.tls_roots, TlsRoots::System, "{var}");
        }
        let c = cfg(&[
            (
                "AWS_ENDPOINT_URL",
                "https://vpce-0abc.firehose.us-east-1.vpce.amazonaws.com",
            ),
            ("EARSHOT_TLS_ROOTS", "aws"),
        ])
        .unwrap();
        assert_eq!(c.delivery.tls_roots, TlsRoots::Aws);
        let c = cfg(&[("EARSHOT_TLS_ROOTS", "system")]).unwrap();
        assert_eq!(c.delivery.tls_roots, TlsRoots::System);
    }

    #[test]
    fn trust_settings_are_read_and_retired_ones_refused() {
        let c = cfg(&[
            ("EARSHOT_TRUSTED_PROXY_HOPS", "2"),
            ("EARSHOT_TRUST_CLOUDFRONT", "true"),
            (
                "EARSHOT_SSAI_KEYS",
                "adsrv1:adsrv1-secret-0123456789,adsrv2:adsrv2-secret-0123456789",
            ),
        ])
        .unwrap();
        assert_eq!((c.trust.proxy_hops, c.trust.cloudfront), (2, true));
        assert_eq!(
            c.trust
                .ssai_keys
                .ids()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
            ["adsrv1", "adsrv2"]
        );
        for (var, value) in [
            ("EARSHOT_TRUST_FORWARDED", "true"),
            ("EARSHOT_TRUST_FORWARDED", "false"),
            ("EARSHOT_TRUST_DEVICE_HEADERS", "true"),
        ] {
            let e = cfg(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.message.starts_with("is no longer read: "), "{e}");
        }
    }

    #[test]
    fn the_listener_period_is_read_and_a_rotation_must_start_one() {
        let c = cfg(&[("EARSHOT_LISTENER_PERIOD", "day")]).unwrap();
        assert_eq!(c.listener.period, ListenerPeriod::Day);
        let next = "2026-11-28:0123456789abcdef";
        let e = cfg(&[("EARSHOT_LISTENER_SECRET_NEXT", next)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "EARSHOT_LISTENER_SECRET_NEXT: 2026-11-28 is not the 1st of a month \
             (listener ids are monthly)"
        );
        let c = cfg(&[
            ("EARSHOT_LISTENER_PERIOD", "day"),
            ("EARSHOT_LISTENER_SECRET_NEXT", next),
        ])
        .unwrap();
        assert_eq!(
            c.listener.next.unwrap().0,
            time::macros::date!(2026 - 11 - 28)
        );
        let c = cfg(&[(
            "EARSHOT_LISTENER_SECRET_NEXT",
            "2026-12-01:0123456789abcdef",
        )])
        .unwrap();
        assert_eq!(
            c.listener.next.unwrap().0,
            time::macros::date!(2026 - 12 - 01)
        );
    }

    #[test]
    fn buffered_mode_reads_its_limits() {
        let c = cfg(&[
            ("EARSHOT_FLUSH", "buffered"),
            ("EARSHOT_BUFFER_MAX_EVENTS", "50"),
            ("EARSHOT_BUFFER_MAX_AGE_MS", "250"),
        ])
        .unwrap();
        assert_eq!(
            c.flush,
            FlushMode::Buffered {
                max_events: 50,
                max_age: Duration::from_millis(250)
            }
        );
    }
}
