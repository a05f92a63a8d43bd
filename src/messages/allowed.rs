//! Where the API may schedule messages: an allow-list of exchanges, each with
//! a routing-key pattern in topic-exchange syntax, so the API token is not a
//! way to publish anywhere on the broker. Rows written by SQL are not checked:
//! the database's writers are trusted as they are for every other table.

use std::fmt;

/// Exchange and routing-key pattern pairs; a message may go where any pair
/// matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRoutes(Vec<Route>);

/// One entry: an exchange and a topic pattern its routing keys must match.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    exchange: String,
    pattern: String,
}

/// Why a destination is refused, naming what the allow-list holds instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No entry lists the exchange.
    #[error("exchange '{exchange}' is not allowed; the API may schedule messages to {}", .allowed.join(", "))]
    Exchange {
        exchange: String,
        allowed: Vec<String>,
    },
    /// No pattern listed for the exchange matches the routing key.
    #[error("routing key '{routing_key}' is not allowed on exchange '{exchange}'; allowed patterns: {}", .patterns.join(", "))]
    RoutingKey {
        exchange: String,
        routing_key: String,
        patterns: Vec<String>,
    },
}

/// The largest exchange name and routing key: AMQP short strings.
pub const MAX_NAME_BYTES: usize = 255;

impl AllowedRoutes {
    /// The default: `exchange`, any routing key.
    pub fn any_key_on(exchange: &str) -> Self {
        Self(vec![Route {
            exchange: exchange.to_owned(),
            pattern: "#".to_owned(),
        }])
    }

    /// Parses comma-separated `exchange:pattern` entries, e.g.
    /// `game_scheduler:#,events:bot.*.welcome`. The exchange ends at the first
    /// `:`, so an exchange whose name holds one cannot be listed.
    pub fn parse(raw: &str) -> Result<Self, String> {
        const EXPECTED: &str = "expected comma-separated exchange:pattern entries, \
             the pattern in topic syntax (* one word, # any number), e.g. game_scheduler:#,events:bot.*";
        let mut routes = Vec::new();
        for entry in raw.split(',').map(str::trim) {
            let (exchange, pattern) = entry
                .split_once(':')
                .ok_or_else(|| format!("'{raw}' has entry '{entry}' without ':'; {EXPECTED}"))?;
            if exchange.is_empty()
                || exchange.len() > MAX_NAME_BYTES
                || !exchange.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "'{raw}' has exchange '{exchange}'; exchange names are 1 to {MAX_NAME_BYTES} \
                     printable ASCII characters without spaces; {EXPECTED}"
                ));
            }
            if pattern.len() > MAX_NAME_BYTES || pattern.contains('\0') {
                return Err(format!(
                    "'{raw}' has pattern '{pattern}' for exchange '{exchange}'; patterns are at most \
                     {MAX_NAME_BYTES} bytes; {EXPECTED}"
                ));
            }
            routes.push(Route {
                exchange: exchange.to_owned(),
                pattern: pattern.to_owned(),
            });
        }
        Ok(Self(routes))
    }

    /// Whether a message to `exchange` with `routing_key` may be scheduled.
    pub fn check(&self, exchange: &str, routing_key: &str) -> Result<(), Refusal> {
        let patterns: Vec<&str> = self
            .0
            .iter()
            .filter(|route| route.exchange == exchange)
            .map(|route| route.pattern.as_str())
            .collect();
        if patterns.is_empty() {
            let mut allowed: Vec<String> =
                self.0.iter().map(|route| route.exchange.clone()).collect();
            allowed.sort_unstable();
            allowed.dedup();
            return Err(Refusal::Exchange {
                exchange: exchange.to_owned(),
                allowed,
            });
        }
        if patterns
            .iter()
            .any(|pattern| topic_matches(pattern, routing_key))
        {
            Ok(())
        } else {
            Err(Refusal::RoutingKey {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                patterns: patterns.into_iter().map(str::to_owned).collect(),
            })
        }
    }
}

impl fmt::Display for AllowedRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, route) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", route.exchange, route.pattern)?;
        }
        Ok(())
    }
}

/// The words of a topic routing key or pattern: none for the empty string,
/// as RabbitMQ splits them.
fn words(text: &str) -> Vec<&str> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split('.').collect()
    }
}

/// RabbitMQ's topic matching: `*` is exactly one word, `#` zero or more; any
/// other word, including one that merely contains `*` or `#`, matches itself.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    let pattern = words(pattern);
    let key = words(routing_key);
    // matched[k]: the pattern so far matches the first k words of the key.
    let mut matched = vec![false; key.len() + 1];
    matched[0] = true;
    for word in pattern {
        let mut next = vec![false; key.len() + 1];
        for k in 0..=key.len() {
            next[k] = match word {
                "#" => matched[k] || (k > 0 && next[k - 1]),
                "*" => k > 0 && matched[k - 1],
                literal => k > 0 && matched[k - 1] && key[k - 1] == literal,
            };
        }
        matched = next;
    }
    matched[key.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_as_rabbitmq_does() {
        for (pattern, key, expected) in [
            ("#", "", true),
            ("#", "a.b.c", true),
            ("*", "", false),
            ("*", "a", true),
            ("*", "a.b", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("a.#.z", "a.z", true),
            ("a.#.z", "a.b.c.z", true),
            ("a.#.z", "a.b.c", false),
            ("#.b", "a.b", true),
            ("*.b", "b", false),
            ("a", "a", true),
            ("a", "ab", false),
            ("a*", "ab", false),
            ("a*", "a*", true),
            ("", "", true),
            ("", "a", false),
            ("a..b", "a..b", true),
            ("a.*.b", "a..b", true),
        ] {
            assert_eq!(
                topic_matches(pattern, key),
                expected,
                "{pattern:?} against {key:?}"
            );
        }
    }

    #[test]
    fn entries_name_an_exchange_and_a_pattern() {
        let routes = AllowedRoutes::parse("game_scheduler:#, events:bot.*.welcome").unwrap();
        assert_eq!(routes.check("game_scheduler", "x.y"), Ok(()));
        assert_eq!(routes.check("events", "bot.1.welcome"), Ok(()));
        assert!(matches!(
            routes.check("events", "bot.1.bye"),
            Err(Refusal::RoutingKey { patterns, .. }) if patterns == ["bot.*.welcome"]
        ));
        assert!(matches!(
            routes.check("amq.direct", "x"),
            Err(Refusal::Exchange { allowed, .. }) if allowed == ["events", "game_scheduler"]
        ));
        assert_eq!(routes.to_string(), "game_scheduler:#,events:bot.*.welcome");
        for bad in ["", "game_scheduler", ":#", "a b:#", "x:a\0"] {
            assert!(AllowedRoutes::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            AllowedRoutes::parse("game_scheduler:#").unwrap(),
            AllowedRoutes::any_key_on("game_scheduler")
        );
    }
}
