//! Server endpoints (`host:port`) and the order in which a client tries them.
//!
//! A clustered broker or database is reached through several nodes: the
//! bridge and the publisher keep one list, stay on the node that works and
//! move to the next only when it fails, so a failover costs one connection
//! attempt, not a round of all nodes.

use std::fmt;

/// One `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Why an endpoint does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Nothing before the port.
    #[error("{0:?} has no host; write host:port, e.g. 10.0.0.5:1883")]
    NoHost(String),
    /// The port is not a number in 1..=65535.
    #[error("{0:?} has no valid port after the last ':' (1..=65535)")]
    BadPort(String),
    /// An IPv6 address without its closing bracket.
    #[error("{0:?}: an IPv6 address goes in brackets, e.g. [::1]:1883")]
    Bracket(String),
}

impl Endpoint {
    /// Parses `host:port`, `[v6]:port`, or a bare host that takes `default_port`.
    pub fn parse(text: &str, default_port: u16) -> Result<Self, EndpointError> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| EndpointError::Bracket(text.to_owned()))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(EndpointError::Bracket(text.to_owned())),
            }
        } else {
            match text.rsplit_once(':') {
                // Two colons without brackets: a bare IPv6 address, no port.
                Some((host, _)) if host.contains(':') => (text, None),
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        if host.is_empty() {
            return Err(EndpointError::NoHost(text.to_owned()));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| EndpointError::BadPort(text.to_owned()))?,
            None => default_port,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses a list of endpoints; an empty list means the single `host:port`.
pub fn parse_list(hosts: &[String], host: &str, port: u16) -> Result<Vec<Endpoint>, EndpointError> {
    if hosts.is_empty() {
        return Ok(vec![Endpoint {
            host: host.to_owned(),
            port,
        }]);
    }
    hosts.iter().map(|h| Endpoint::parse(h, port)).collect()
}

/// A non-empty ring of nodes (an [`Endpoint`] with whatever a client keeps
/// per node) with the one in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring<T> {
    all: Vec<T>,
    current: usize,
}

impl<T> Ring<T> {
    /// The ring over `all`, starting at position `start` (modulo the length,
    /// so that several connections of one client spread over the nodes);
    /// `None` when `all` is empty.
    pub fn new(all: Vec<T>, start: usize) -> Option<Self> {
        if all.is_empty() {
            return None;
        }
        let current = start % all.len();
        Some(Self { all, current })
    }

    /// The node in use.
    pub fn current(&self) -> &T {
        // `all` is never empty and `current` always below its length (see
        // `new` and `advance`).
        &self.all[self.current]
    }

    /// Its position in the list.
    pub fn position(&self) -> usize {
        self.current
    }

    /// Moves to the next node (wrapping) and returns it.
    pub fn advance(&mut self) -> &T {
        self.current = (self.current + 1) % self.all.len();
        self.current()
    }

    /// How many nodes there are (at least one).
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Always false: a ring has at least one node.
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_host_port_forms() {
        assert_eq!(Endpoint::parse("a:1884", 1883).unwrap(), ep("a", 1884));
        assert_eq!(Endpoint::parse(" a ", 1883).unwrap(), ep("a", 1883));
        assert_eq!(Endpoint::parse("[::1]:9", 1).unwrap(), ep("::1", 9));
        assert_eq!(Endpoint::parse("[::1]", 7).unwrap(), ep("::1", 7));
        assert_eq!(Endpoint::parse("::1", 7).unwrap(), ep("::1", 7));
        assert_eq!(ep("::1", 9).to_string(), "[::1]:9");
        assert_eq!(ep("a", 9).to_string(), "a:9");
    }

    #[test]
    fn rejects_what_cannot_be_an_endpoint() {
        assert!(matches!(
            Endpoint::parse(":1883", 1),
            Err(EndpointError::NoHost(_))
        ));
        assert!(matches!(
            Endpoint::parse("a:0", 1),
            Err(EndpointError::BadPort(_))
        ));
        assert!(matches!(
            Endpoint::parse("a:x", 1),
            Err(EndpointError::BadPort(_))
        ));
        assert!(matches!(
            Endpoint::parse("[::1:5", 1),
            Err(EndpointError::Bracket(_))
        ));
    }

    #[test]
    fn an_empty_list_is_the_single_host() {
        assert_eq!(parse_list(&[], "h", 5).unwrap(), vec![ep("h", 5)]);
        let list = parse_list(&["a".into(), "b:6".into()], "h", 5).unwrap();
        assert_eq!(list, vec![ep("a", 5), ep("b", 6)]);
    }

    #[test]
    fn the_ring_wraps_and_starts_where_told() {
        let mut ring = Ring::new(vec![ep("a", 1), ep("b", 1)], 3).unwrap();
        assert_eq!(ring.current(), &ep("b", 1));
        assert_eq!(ring.advance(), &ep("a", 1));
        assert_eq!(ring.advance(), &ep("b", 1));
        assert_eq!(ring.position(), 1);
        assert!(Ring::<Endpoint>::new(Vec::new(), 0).is_none());
    }
}
