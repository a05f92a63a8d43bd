//! Value parsers for settings. Each returns a message that quotes the offending
//! value (with any password masked) and says what is expected; the CLI layer
//! prefixes it with the setting's name.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::TargetSessionAttrs;

/// A PostgreSQL connection string, kept parsed and with a printable form that
/// never reveals the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: std::sync::Arc<tokio_postgres::Config>,
    raw: SecretString,
    masked: String,
}

impl DatabaseUrl {
    /// The parsed connection settings.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The URL as given, with the password replaced by `****`.
    pub fn masked(&self) -> &str {
        &self.masked
    }

    /// The URL as given, password included: only for handing to a child process.
    pub fn raw(&self) -> &str {
        self.raw.expose_secret()
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked)
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected postgresql://user:password@host:port/database";
        let masked = mask_password(raw);
        let scheme = raw.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("postgres" | "postgresql") => {}
            Some(other) if other.starts_with("postgres") => {
                return Err(format!(
                    "'{masked}' names a driver ('{other}'); {EXPECTED} without a driver suffix"
                ));
            }
            Some(other) => {
                return Err(format!(
                    "'{masked}' has scheme '{other}', not postgresql; {EXPECTED}"
                ));
            }
            None => return Err(format!("'{masked}' is not a URL; {EXPECTED}")),
        }
        // Checked before the driver parses it: its error names the option but
        // neither the value nor which values it supports.
        let target_session_attrs = url_parameter(raw, "target_session_attrs");
        if let Some(asked) = &target_session_attrs
            && !matches!(asked.as_str(), "read-write" | "any")
        {
            return Err(format!(
                "'{masked}' asks for target_session_attrs={asked}; use read-write \
                 (the default when the URL lists several hosts) or any: claims need a \
                 server that accepts writes, and the driver does not support libpq's \
                 primary, standby or prefer-standby"
            ));
        }
        let mut config = tokio_postgres::Config::from_str(raw)
            .map_err(|err| format!("'{masked}' cannot be parsed ({err}); {EXPECTED}"))?;
        if config.get_hosts().is_empty() {
            return Err(format!("'{masked}' names no host; {EXPECTED}"));
        }
        // Several hosts are a primary and its standbys: connect to the one that
        // accepts writes (libpq tries them in order), whichever was promoted.
        if config.get_hosts().len() > 1 && target_session_attrs.is_none() {
            config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        Ok(Self {
            config: std::sync::Arc::new(config),
            raw: raw.into(),
            masked,
        })
    }
}

/// The value of the query parameter `name` of a `postgresql://` URL, decoded;
/// the last one if it is repeated (as the driver reads it).
fn url_parameter(raw: &str, name: &str) -> Option<String> {
    let rest = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    // As the driver reads it: the user-info ends at the first '@'.
    let rest = rest.split_once('@').map_or(rest, |(_, rest)| rest);
    let (_, query) = rest.split_once('?')?;
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .last()
}

/// The RabbitMQ broker: one `amqp://` URL, or a comma-separated list of the
/// URLs of one cluster's nodes, with a printable form that never reveals a
/// password.
#[derive(Clone)]
pub struct BrokerUrl {
    raw: SecretString,
    masked: String,
    nodes: Vec<BrokerNode>,
}

/// One node of a [`BrokerUrl`].
#[derive(Clone)]
pub struct BrokerNode {
    raw: SecretString,
    host: String,
    port: u16,
}

impl BrokerNode {
    /// The node's URL, for the AMQP client.
    pub fn as_str(&self) -> &str {
        self.raw.expose_secret()
    }

    /// `host:port`, for error messages.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl BrokerUrl {
    /// The setting as given (every node), to hand to another process.
    pub fn as_str(&self) -> &str {
        self.raw.expose_secret()
    }

    /// The setting with every password replaced by `****`.
    pub fn masked(&self) -> &str {
        &self.masked
    }

    /// `host:port` of every node, for error messages.
    pub fn endpoint(&self) -> String {
        let endpoints: Vec<String> = self.nodes.iter().map(BrokerNode::endpoint).collect();
        endpoints.join(", ")
    }

    /// The nodes, in the order given.
    pub fn nodes(&self) -> &[BrokerNode] {
        &self.nodes
    }
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked)
    }
}

impl FromStr for BrokerUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let entries: Vec<&str> = raw.split(',').map(str::trim).collect();
        // An entry without a scheme is most likely the rest of a password
        // holding a ',', and the entry before it its start: quote neither.
        if entries.len() > 1
            && let Some(index) = entries.iter().position(|entry| !entry.contains("://"))
        {
            return Err(format!(
                "entry {} of {} is not an amqp:// URL (list the nodes of one cluster \
                 separated by ','; percent-encode a ',' inside a password as %2C)",
                index + 1,
                entries.len()
            ));
        }
        let mut nodes = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            nodes.push(parse_broker_node(entry).map_err(|err| {
                if entries.len() > 1 {
                    format!("entry {} of {}: {err}", index + 1, entries.len())
                } else {
                    err
                }
            })?);
        }
        let masked: Vec<String> = entries.iter().map(|entry| mask_password(entry)).collect();
        Ok(Self {
            raw: raw.into(),
            masked: masked.join(","),
            nodes,
        })
    }
}

fn parse_broker_node(raw: &str) -> Result<BrokerNode, String> {
    const EXPECTED: &str = "expected amqp://user:password@host:port/vhost (or amqps://)";
    let masked = mask_password(raw);
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| format!("'{masked}' is not a URL; {EXPECTED}"))?;
    let default_port = match scheme {
        "amqp" => 5672,
        "amqps" => 5671,
        other => return Err(format!("'{masked}' has scheme '{other}'; {EXPECTED}")),
    };
    // The user-info ends at the last '@' (a password may hold '/' or '?').
    if let Some((userinfo, _)) = rest.rsplit_once('@')
        && userinfo.contains(['/', '?', '#'])
    {
        return Err(format!(
            "'{masked}' has '/', '?' or '#' in its user or password; \
             percent-encode them (%2F, %3F, %23); {EXPECTED}"
        ));
    }
    let url = url::Url::parse(raw).map_err(|err| match err {
        url::ParseError::InvalidPort => {
            // url's error does not quote the port; it follows the last ':' of the host part.
            let host_port = rest.rsplit('@').next().unwrap_or_default();
            let host_port = host_port.split(['/', '?', '#']).next().unwrap_or_default();
            let port = host_port
                .rsplit_once(':')
                .map_or(host_port, |(_, port)| port);
            format!("'{masked}' has port '{port}'; {EXPECTED}")
        }
        url::ParseError::EmptyHost => format!("'{masked}' names no host; {EXPECTED}"),
        other => format!("'{masked}' cannot be parsed ({other}); {EXPECTED}"),
    })?;
    let host = url
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| format!("'{masked}' names no host; {EXPECTED}"))?;
    raw.parse::<lapin::uri::AMQPUri>()
        .map_err(|err| format!("'{masked}' cannot be parsed ({err}); {EXPECTED}"))?;
    Ok(BrokerNode {
        raw: raw.into(),
        host: host.to_owned(),
        port: url.port().unwrap_or(default_port),
    })
}

/// Replaces every password in a connection string with `****`: the one in
/// the user-info of a URL (whatever characters it holds, as far as the last
/// `@`), and the value of any `password` parameter (`?password=`, `&sslpassword=`,
/// key-value `password = ...`). Errs on the side of masking too much: a
/// configuration message must never print a secret, even of a malformed value.
// Not the url crate: it ends the user-info at the first '/', so part of a password holding one could print.
pub fn mask_password(raw: &str) -> String {
    mask_password_values(&mask_userinfo(raw))
}

fn mask_userinfo(raw: &str) -> String {
    let Some(at) = raw.rfind('@') else {
        return raw.to_owned();
    };
    let start = raw.find("://").map_or(0, |separator| separator + 3);
    if start > at {
        return raw.to_owned();
    }
    match raw[start..at].find(':') {
        Some(colon) => format!("{}:****{}", &raw[..start + colon], &raw[at..]),
        None => raw.to_owned(),
    }
}

fn mask_password_values(text: &str) -> String {
    const KEY: &str = "password";
    let lower = text.to_ascii_lowercase();
    let mut masked = String::with_capacity(text.len());
    let mut done = 0;
    while let Some(found) = lower[done..].find(KEY) {
        let key_end = done + found + KEY.len();
        let after_key = key_end + (text[key_end..].len() - text[key_end..].trim_start().len());
        if !text[after_key..].starts_with('=') {
            masked.push_str(&text[done..key_end]);
            done = key_end;
            continue;
        }
        let value = after_key
            + 1
            + (text[after_key + 1..].len() - text[after_key + 1..].trim_start().len());
        let value_end = if text[value..].starts_with('\'') {
            text[value + 1..]
                .find('\'')
                .map_or(text.len(), |quote| value + quote + 2)
        } else {
            text[value..]
                .find(['&', ' ', '#'])
                .map_or(text.len(), |end| value + end)
        };
        masked.push_str(&text[done..value]);
        masked.push_str("****");
        done = value_end;
    }
    masked.push_str(&text[done..]);
    masked
}

/// Parses durations such as `250ms`, `30s`, `5m`, `1h` or `7d` with humantime.
// A thin wrapper: humantime's errors neither quote the value nor say what is
// expected, and its range exceeds the u64 milliseconds settings were bounded by.
pub fn duration(raw: &str) -> Result<Duration, String> {
    let expected = "expected a whole number with a unit (ms, s, m, h or d), e.g. 30s";
    let value = humantime::parse_duration(raw).map_err(|err| match err {
        humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            format!("'{raw}' has no unit; {expected}")
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("'{raw}' has unknown unit '{unit}'; {expected}")
        }
        humantime::DurationError::NumberOverflow => format!("'{raw}' is too large; {expected}"),
        _ => format!("'{raw}' is not a duration; {expected}"),
    })?;
    if u64::try_from(value.as_millis()).is_err() {
        return Err(format!("'{raw}' is too large; {expected}"));
    }
    Ok(value)
}

/// A duration that must be at least one millisecond.
pub fn positive_duration(raw: &str) -> Result<Duration, String> {
    let value = duration(raw)?;
    if value < Duration::from_millis(1) {
        let size = if value.is_zero() { "zero" } else { "under 1ms" };
        return Err(format!(
            "'{raw}' is {size}; expected a positive duration, e.g. 30s"
        ));
    }
    Ok(value)
}

/// Builds a parser for a positive duration of at most `max`.
pub fn duration_up_to(max: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    let at_most = duration_at_most(max);
    move |raw| {
        positive_duration(raw)?;
        at_most(raw)
    }
}

/// A duration of at most `max`, zero included.
pub fn duration_at_most(max: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |raw| {
        let value = duration(raw)?;
        if value > max {
            return Err(format!(
                "'{raw}' is too long; expected at most {}",
                humantime::format_duration(max)
            ));
        }
        Ok(value)
    }
}

/// A socket address to listen on, such as `0.0.0.0:8080`.
pub fn listen_address(raw: &str) -> Result<SocketAddr, String> {
    raw.parse().map_err(|_| {
        format!("'{raw}' is not a listen address; expected IP:PORT, e.g. 0.0.0.0:8080")
    })
}

/// Builds a parser for a count within `min..=max`.
// Not clap's ranged parser: for `x` it says only "invalid digit found in string", no value or range.
pub fn bounded_integer(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |raw| {
        let value: usize = raw
            .trim()
            .parse()
            .map_err(|_| format!("'{raw}' is not a whole number; expected {min} to {max}"))?;
        if !(min..=max).contains(&value) {
            return Err(format!("'{raw}' is out of range; expected {min} to {max}"));
        }
        Ok(value)
    }
}

/// A bearer token: 16 to 512 visible ASCII characters (never echoed back).
pub fn token(raw: &str) -> Result<SecretString, String> {
    let length = raw.chars().count();
    if !(16..=512).contains(&length) || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the token (value hidden, {length} characters) must be 16 to 512 visible ASCII characters without spaces"
        ));
    }
    Ok(raw.into())
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub fn boolean(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("'{raw}' is not a boolean; expected true or false")),
    }
}

/// Distinct reminder offsets in minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderMinutes(pub Vec<i32>);

/// A comma-separated list of distinct reminder offsets in minutes, e.g. `60,15`.
pub fn reminder_minutes(raw: &str) -> Result<ReminderMinutes, String> {
    let expected =
        "expected distinct whole minutes from 0 to 10080 separated by commas, e.g. 60,15";
    let mut minutes = Vec::new();
    for part in raw.split(',') {
        let value: i32 = part
            .trim()
            .parse()
            .map_err(|_| format!("'{raw}' contains '{}'; {expected}", part.trim()))?;
        if !(0..=10_080).contains(&value) {
            return Err(format!("'{raw}' contains {value}; {expected}"));
        }
        if minutes.contains(&value) {
            return Err(format!("'{raw}' repeats {value}; {expected}"));
        }
        minutes.push(value);
    }
    if minutes.len() > 10 {
        return Err(format!("'{raw}' has more than 10 values; {expected}"));
    }
    Ok(ReminderMinutes(minutes))
}

/// The name of a kind of scheduled event.
pub fn kind(raw: &str) -> Result<&'static crate::kinds::Kind, String> {
    crate::kinds::by_name(raw).ok_or_else(|| {
        let names: Vec<&str> = crate::kinds::ALL.iter().map(|kind| kind.name).collect();
        format!(
            "'{raw}' is not a kind; expected one of {}",
            names.join(", ")
        )
    })
}

/// The allow-list of scheduled messages' destinations: comma-separated
/// `exchange:pattern` entries.
pub fn allowed_routes(raw: &str) -> Result<crate::messages::allowed::AllowedRoutes, String> {
    crate::messages::allowed::AllowedRoutes::parse(raw)
}

/// A trace viewer's URL template: http or https, with `{trace_id}` in it.
pub fn trace_url(raw: &str) -> Result<std::sync::Arc<str>, String> {
    if !raw.contains("{trace_id}") {
        return Err(format!(
            "'{raw}' has no {{trace_id}}; expected a URL with {{trace_id}} where the trace id goes"
        ));
    }
    let parsed = url::Url::parse(&raw.replace("{trace_id}", "0"))
        .map_err(|err| format!("'{raw}' is not a URL: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "'{raw}' is a {} URL; expected http or https",
            parsed.scheme()
        ));
    }
    Ok(std::sync::Arc::from(raw))
}

/// An AMQP exchange or routing key name: 1 to 255 bytes of printable ASCII.
pub fn amqp_name(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.len() > 255 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "'{raw}' is not a valid name; expected 1 to 255 printable ASCII characters without spaces"
        ));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_in_urls_and_key_value_strings() {
        assert_eq!(
            mask_password("postgresql://app:s3cret@db:5432/app"),
            "postgresql://app:****@db:5432/app"
        );
        assert_eq!(
            mask_password("amqp://guest:p@ss@rabbit:5672/%2f"),
            "amqp://guest:****@rabbit:5672/%2f"
        );
        assert_eq!(
            mask_password("postgresql://app@db/app"),
            "postgresql://app@db/app"
        );
        assert_eq!(
            mask_password("host=db password=hunter2 user=app"),
            "host=db password=**** user=app"
        );
    }

    #[test]
    fn masks_passwords_that_malformed_values_carry_anywhere() {
        for (raw, masked) in [
            (
                "postgresql://postgres:s3cr3t/pw@127.0.0.1:5432/db",
                "postgresql://postgres:****@127.0.0.1:5432/db",
            ),
            (
                "postgresql://h/db?user=u&password=PW&sslmode=disable",
                "postgresql://h/db?user=u&password=****&sslmode=disable",
            ),
            (
                "postgresql://h/db?sslpassword=PW",
                "postgresql://h/db?sslpassword=****",
            ),
            ("app:PW@db:5432/app", "app:****@db:5432/app"),
            ("postgresql:/app:PW@db/app", "postgresql:****@db/app"),
            (
                "host=db password = PW user=u",
                "host=db password = **** user=u",
            ),
            (
                "host=db password='P W' user=u",
                "host=db password=**** user=u",
            ),
            ("http://collector:PW@[::1", "http://collector:****@[::1"),
        ] {
            assert_eq!(mask_password(raw), masked, "{raw}");
        }
    }

    #[test]
    fn a_broker_password_with_a_slash_asks_for_percent_encoding_without_printing_it() {
        let err = "amqp://guest:s3cr3t/pw@rabbit:5673/%2f"
            .parse::<BrokerUrl>()
            .unwrap_err();
        assert!(err.contains("percent-encode"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        let url: BrokerUrl = "amqp://guest:s3cr3t%2Fpw@rabbit:5673/%2f".parse().unwrap();
        assert_eq!(url.endpoint(), "rabbit:5673");
    }

    #[test]
    fn database_url_rejects_driver_suffixes_and_other_schemes_without_leaking_the_password() {
        let err = "postgresql+asyncpg://u:secret@h/db"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(err.contains("driver"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = "mysql://u:secret@h/db".parse::<DatabaseUrl>().unwrap_err();
        assert!(err.contains("scheme 'mysql'"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!("localhost".parse::<DatabaseUrl>().is_err());
        let ok: DatabaseUrl = "postgresql://u:secret@h:5433/db".parse().unwrap();
        assert_eq!(ok.config().get_ports(), &[5433]);
        assert_eq!(format!("{ok:?}"), "postgresql://u:****@h:5433/db");
    }

    #[test]
    fn a_database_url_listing_several_hosts_connects_to_the_one_that_accepts_writes() {
        let url: DatabaseUrl = "postgresql://u:secret@pg1:5432,pg2:5433/db"
            .parse()
            .unwrap();
        assert_eq!(url.config().get_ports(), &[5432, 5433]);
        assert_eq!(
            url.config().get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        // One host: no extra round trip per connection unless asked for.
        let url: DatabaseUrl = "postgresql://u@pg1/db".parse().unwrap();
        assert_eq!(
            url.config().get_target_session_attrs(),
            TargetSessionAttrs::Any
        );
        let url: DatabaseUrl = "postgresql://u@pg1/db?target_session_attrs=read-write"
            .parse()
            .unwrap();
        assert_eq!(
            url.config().get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        // Asked for explicitly, any stays any.
        let url: DatabaseUrl =
            "postgresql://u@pg1,pg2/db?connect_timeout=3&target_session_attrs=any"
                .parse()
                .unwrap();
        assert_eq!(
            url.config().get_target_session_attrs(),
            TargetSessionAttrs::Any
        );
    }

    #[test]
    fn a_database_url_asking_for_a_standby_or_a_libpq_only_mode_is_refused_by_name() {
        for asked in [
            "primary",
            "standby",
            "prefer-standby",
            "read-only",
            "nonsense",
        ] {
            let err = format!("postgresql://u:secret@pg1,pg2/db?target_session_attrs={asked}")
                .parse::<DatabaseUrl>()
                .unwrap_err();
            assert!(
                err.contains(&format!("target_session_attrs={asked}"))
                    && err.contains("use read-write")
                    && !err.contains("secret"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_broker_url_may_list_the_nodes_of_a_cluster() {
        let url: BrokerUrl = "amqp://u:p1@r1:5672/%2f, amqp://u:p2@r2:5673/%2f,amqp://u:p3@r3/%2f"
            .parse()
            .unwrap();
        let endpoints: Vec<String> = url.nodes().iter().map(BrokerNode::endpoint).collect();
        assert_eq!(endpoints, ["r1:5672", "r2:5673", "r3:5672"]);
        assert_eq!(url.endpoint(), "r1:5672, r2:5673, r3:5672");
        assert_eq!(url.nodes()[1].as_str(), "amqp://u:p2@r2:5673/%2f");
        assert_eq!(
            url.masked(),
            "amqp://u:****@r1:5672/%2f,amqp://u:****@r2:5673/%2f,amqp://u:****@r3/%2f"
        );
        let err = "amqp://u:p@r1,http://u:secret@r2"
            .parse::<BrokerUrl>()
            .unwrap_err();
        assert!(
            err.starts_with("entry 2 of 2:")
                && err.contains("scheme 'http'")
                && !err.contains("secret"),
            "{err}"
        );
        // A ',' inside a password splits the URL; the rest is never printed.
        let err = "amqp://u:se,cret@r1/%2f".parse::<BrokerUrl>().unwrap_err();
        assert!(err.contains("%2C") && !err.contains("cret"), "{err}");
    }

    #[test]
    fn broker_url_knows_its_endpoint() {
        let url: BrokerUrl = "amqp://guest:guest@rabbit:5673/%2f".parse().unwrap();
        assert_eq!(url.endpoint(), "rabbit:5673");
        let url: BrokerUrl = "amqp://localhost".parse().unwrap();
        assert_eq!(url.endpoint(), "localhost:5672");
        let url: BrokerUrl = "amqps://u:p@[::1]/%2f".parse().unwrap();
        assert_eq!(url.endpoint(), "[::1]:5671");
        let err = "amqp://u:secret@:5672/".parse::<BrokerUrl>().unwrap_err();
        assert!(
            err.contains("names no host") && !err.contains("secret"),
            "{err}"
        );
        let err = "http://u:secret@h".parse::<BrokerUrl>().unwrap_err();
        assert!(
            err.contains("scheme 'http'") && !err.contains("secret"),
            "{err}"
        );
        let err = "amqp://u:secret@h:notaport/"
            .parse::<BrokerUrl>()
            .unwrap_err();
        assert!(
            err.contains("port 'notaport'") && !err.contains("secret"),
            "{err}"
        );
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(duration("30").unwrap_err().contains("no unit"));
        assert!(duration("3x").unwrap_err().contains("unknown unit 'x'"));
        assert!(positive_duration("0s").unwrap_err().contains("zero"));
        assert!(
            positive_duration("500us")
                .unwrap_err()
                .contains("under 1ms")
        );
        assert!(duration("soon").unwrap_err().contains("'soon'"));
    }

    #[test]
    fn reminder_minutes_are_distinct_and_bounded() {
        assert_eq!(
            reminder_minutes("60, 15,0"),
            Ok(ReminderMinutes(vec![60, 15, 0]))
        );
        assert!(
            reminder_minutes("60,60")
                .unwrap_err()
                .contains("repeats 60")
        );
        assert!(reminder_minutes("-1").unwrap_err().contains("-1"));
        assert!(reminder_minutes("10081").unwrap_err().contains("10081"));
        assert!(reminder_minutes("a").unwrap_err().contains("'a'"));
        assert!(reminder_minutes("0,1,2,3,4,5,6,7,8,9,10").is_err());
    }

    #[test]
    fn tokens_are_long_enough_and_never_echoed() {
        assert!(token("0123456789abcdef").is_ok());
        let err = token("short-secret").unwrap_err();
        assert!(!err.contains("short-secret"), "{err}");
        assert!(token("has a space in it, long enough").is_err());
    }

    #[test]
    fn a_bounded_duration_may_be_zero() {
        let parse = duration_at_most(Duration::from_secs(1));
        assert_eq!(parse("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(
            parse("2s"),
            Err("'2s' is too long; expected at most 1s".to_owned())
        );
        assert!(parse("5").unwrap_err().contains("has no unit"));
    }

    #[test]
    fn durations_can_be_bounded() {
        let parse = duration_up_to(Duration::from_secs(86_400));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse("2d").unwrap_err().contains("at most 1day"));
        assert!(parse("0s").is_err());
    }

    #[test]
    fn bounded_integers_name_their_range() {
        let parse = bounded_integer(1, 10);
        assert_eq!(parse("10"), Ok(10));
        assert!(parse("11").unwrap_err().contains("1 to 10"));
        assert!(parse("x").unwrap_err().contains("'x'"));
    }
}
