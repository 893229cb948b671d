//! The real client address behind trusted proxies.
//!
//! Behind a TLS proxy or load balancer every request arrives from the
//! proxy's address, so per-address limits would count all clients as one
//! (or, with the proxy on loopback, exempt them all). The operator names
//! the proxies (`--trusted-proxies`); a request from one of them is
//! attributed to the address its `X-Forwarded-For` header reports (else
//! its `Forwarded: for=`), read from the right: each trusted proxy appends
//! the address it received from, so the rightmost entry that is not a
//! trusted proxy is the client, and anything a client wrote itself further
//! left is ignored. A request from any other address is its own client,
//! whatever headers it carries: nothing is believed by default.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// An address range: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    addr: IpAddr,
    bits: u8,
}

impl Range {
    fn parse(text: &str) -> Option<Range> {
        let (addr, bits) = match text.split_once('/') {
            Some((a, b)) => (
                a.trim().parse::<IpAddr>().ok()?,
                Some(b.trim().parse::<u8>().ok()?),
            ),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Range { addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The configured trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Range>);

impl TrustedProxies {
    /// Parses addresses and CIDR ranges; the error is the first bad entry.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, String> {
        list.iter()
            .map(|s| Range::parse(s.as_ref()).ok_or_else(|| s.as_ref().to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|r| r.contains(ip))
    }

    /// The client a request from `peer` with `headers` stands for.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_for(headers);
        // Rightmost first: the nearest hop our proxy saw.
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        return ip;
                    }
                }
                // An unparseable entry (`unknown`, an obfuscated name)
                // ends the chain: what is left of it is not vouched for.
                None => return client,
            }
        }
        client
    }
}

/// The hops a request went through, oldest first: every `X-Forwarded-For`
/// entry if there is any, else every `Forwarded` `for=`. `None` for an
/// entry that is not an address.
///
/// A header line is read whole even when it holds bytes that are not
/// ASCII (a proxy that appends to the client's own line would otherwise
/// lose the address it appended), and `Forwarded` is read only when no
/// `X-Forwarded-For` line came at all, so a client cannot switch headers
/// by sending a line the relay cannot read.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let lines = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    if headers.contains_key("x-forwarded-for") {
        return lines("x-forwarded-for")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_node)
            .collect();
    }
    lines("forwarded")
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(v.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`,
/// `2001:db8::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let inner = rest.split(']').next()?;
        return inner.parse::<IpAddr>().ok().map(canonical);
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn nothing_is_believed_by_default() {
        let none = TrustedProxies::default();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(none.client(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    /// A client's non-ASCII `X-Forwarded-For`, to which a proxy appended
    /// the real address, must not drop the line and let a forged
    /// `Forwarded` (or the proxy's own loopback address) stand in.
    #[test]
    fn a_line_with_non_ascii_bytes_still_counts_and_forwarded_is_not_read() {
        let t = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xe9, 203.0.113.9").unwrap(),
        );
        h.append("forwarded", HeaderValue::from_static("for=198.51.100.7"));
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("203.0.113.9"));
        let mut only_garbage = HeaderMap::new();
        only_garbage.append("x-forwarded-for", HeaderValue::from_bytes(b"\xe9").unwrap());
        only_garbage.append("forwarded", HeaderValue::from_static("for=198.51.100.7"));
        assert_ne!(t.client(ip("127.0.0.1"), &only_garbage), ip("198.51.100.7"));
    }

    #[test]
    fn only_trusted_peers_are_believed_rightmost_first() {
        let t = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3")]);
        // The client forged 6.6.6.6; our proxies saw 203.0.113.9.
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("203.0.113.9"));
        // The same header from an untrusted peer is ignored.
        assert_eq!(t.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        // Several header lines count as one list.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(t.client(ip("10.9.9.9"), &h), ip("203.0.113.7"));
        // No header: the proxy itself.
        assert_eq!(
            t.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        // Garbage ends the chain at the last good hop.
        let h = headers(&[("x-forwarded-for", "203.0.113.1, unknown")]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn forwarded_header_and_address_forms() {
        let t = TrustedProxies::parse(&["::1", "127.0.0.1"]).unwrap();
        let h = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711""#,
        )]);
        assert_eq!(t.client(ip("::1"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=192.0.2.60:8080")]);
        assert_eq!(t.client(ip("::ffff:127.0.0.1"), &h), ip("192.0.2.60"));
        // X-Forwarded-For wins when both are present.
        let h = headers(&[
            ("forwarded", "for=192.0.2.60"),
            ("x-forwarded-for", "192.0.2.61"),
        ]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("192.0.2.61"));
    }

    #[test]
    fn ranges_parse_and_match() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["nope"]).is_err());
        let t = TrustedProxies::parse(&["192.168.4.0/22", "fd00::/8"]).unwrap();
        assert!(t.trusts(ip("192.168.7.255")));
        assert!(!t.trusts(ip("192.168.8.0")));
        assert!(t.trusts(ip("fd12::1")));
        assert!(!t.trusts(ip("fe80::1")));
        assert!(TrustedProxies::parse(&["0.0.0.0/0"])
            .unwrap()
            .trusts(ip("8.8.8.8")));
    }
}
