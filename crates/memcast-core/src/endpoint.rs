//! What is wrong with a ZeroMQ endpoint, said before ZeroMQ sees it: libzmq
//! answers every mistake with the same "Invalid argument".

use std::net::{IpAddr, Ipv4Addr};

/// The forms memcast speaks, shown with every complaint.
pub const FORMS: &str =
    "epgm://IFACE;GROUP:PORT, pgm://IFACE;GROUP:PORT, tcp://HOST:PORT, ipc://PATH or unixgram://PATH";

/// The longest socket path Linux takes (`sun_path` is 108 bytes with its
/// terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// A `unixgram://PATH` relay also binds `PATH` + this for frames too big
/// for one datagram (see memcast-bus).
pub const BIG_FRAME_SUFFIX: &str = ".big";

/// An example of a multicast endpoint, for hints.
pub const EXAMPLE: &str = "epgm://eth0;239.192.1.1:5555";

/// Which part of `endpoint` is wrong, or `None` when it is well formed.
/// `bind`: a `tcp://` port may be `*` (any free port).
pub fn problem(endpoint: &str) -> Option<String> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some(parts) => parts,
        None => return Some(format!("no transport: expected {FORMS}")),
    };
    match scheme {
        "epgm" | "pgm" => multicast_problem(scheme, rest),
        "tcp" => tcp_problem(rest),
        "ipc" if rest.is_empty() => {
            Some("ipc:// needs a socket path, e.g. ipc:///run/memcast/publish.sock".into())
        }
        "ipc" => None,
        "unixgram" if rest.is_empty() => Some(
            "unixgram:// needs a socket path, e.g. unixgram:///run/memcast/publish.dgram".into(),
        ),
        "unixgram" if rest.len() + BIG_FRAME_SUFFIX.len() > MAX_SOCKET_PATH => Some(format!(
            "socket path {rest:?} is too long: at most {} bytes (the relay also binds {rest}{BIG_FRAME_SUFFIX})",
            MAX_SOCKET_PATH - BIG_FRAME_SUFFIX.len()
        )),
        "unixgram" => None,
        other => Some(format!("unknown transport {other}://: expected {FORMS}")),
    }
}

fn multicast_problem(scheme: &str, rest: &str) -> Option<String> {
    let Some((iface, group_port)) = rest.split_once(';') else {
        // "epgm://eth0" is what php.ini leaves of an unquoted
        // "epgm://eth0;239.192.1.1:5555": ';' starts a comment there.
        if !rest.contains(':') || rest.parse::<IpAddr>().is_ok() {
            return Some(format!(
                "no ;GROUP:PORT after the interface {rest:?}; in php.ini an unquoted ';' starts a comment, \
                 so quote the value: \"{scheme}://{rest};239.192.1.1:5555\""
            ));
        }
        return Some(format!(
            "no interface: PGM needs the one to send and listen on, {scheme}://IFACE;{rest} \
             (e.g. {scheme}://eth0;{rest}; an interface name or its address)"
        ));
    };
    if iface.is_empty() || iface.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "bad interface {iface:?} before ';': an interface name or its address (e.g. {EXAMPLE})"
        ));
    }
    let Some((group, port)) = group_port.rsplit_once(':') else {
        return Some(format!(
            "no port after the group {group_port:?}: {scheme}://{iface};{group_port}:5555"
        ));
    };
    match group.parse::<Ipv4Addr>() {
        Err(_) => {
            return Some(format!(
                "group {group:?} is not an IPv4 address: a multicast group such as 239.192.1.1"
            ))
        }
        Ok(ip) if !ip.is_multicast() => {
            return Some(format!(
                "group {ip} is not a multicast address (224.0.0.0 to 239.255.255.255; \
                 239.192.0.0/14 is for local use, e.g. 239.192.1.1)"
            ))
        }
        Ok(_) => {}
    }
    port_problem(port, false)
}

/// The most ports one multicast range may name (`GROUP:FIRST-LAST`).
pub const MAX_PORT_RANGE: u16 = 64;

/// A multicast endpoint whose port is a range, `epgm://IFACE;GROUP:5555-5562`,
/// as one endpoint per port; any other endpoint as itself. How memcastd
/// takes one `--subscribe` for every host's own port (each host publishing
/// on its own port spares every other host's sockets its packets: see
/// memcastd's `--subscribe`). A bad range is said in words.
pub fn expand_ports(endpoint: &str) -> Result<Vec<String>, String> {
    let multicast = endpoint.starts_with("epgm://") || endpoint.starts_with("pgm://");
    let range = endpoint
        .rsplit_once(':')
        .filter(|(head, _)| multicast && head.contains(';'))
        .and_then(|(head, ports)| Some((head, ports.split_once('-')?)));
    let Some((head, (first, last))) = range else {
        return Ok(vec![endpoint.to_owned()]);
    };
    let bad = || {
        format!(
            "bad port range {first}-{last}: FIRST-LAST, 1 to 65535, FIRST not above LAST, at most {MAX_PORT_RANGE} ports (e.g. {head}:5555-5562)"
        )
    };
    let (Ok(first), Ok(last)) = (first.parse::<u16>(), last.parse::<u16>()) else {
        return Err(bad());
    };
    if first == 0 || first > last || last - first >= MAX_PORT_RANGE {
        return Err(bad());
    }
    Ok((first..=last).map(|p| format!("{head}:{p}")).collect())
}

fn tcp_problem(rest: &str) -> Option<String> {
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Some(format!("no port: tcp://{rest}:PORT"));
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!("bad address {host:?}: tcp://HOST:PORT"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Some(format!(
            "write an IPv6 address in brackets: tcp://[{host}]:{port}"
        ));
    }
    port_problem(port, true)
}

fn port_problem(port: &str, wildcard: bool) -> Option<String> {
    if wildcard && port == "*" {
        return None;
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => None,
        _ => Some(format!("bad port {port:?}: 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn says(endpoint: &str, words: &str) {
        let p = problem(endpoint).unwrap_or_else(|| panic!("{endpoint} accepted"));
        assert!(p.contains(words), "{endpoint}: {p}");
    }

    #[test]
    fn good_endpoints_pass() {
        for e in [
            EXAMPLE,
            "pgm://10.0.0.1;239.192.1.1:5555",
            "tcp://127.0.0.1:7712",
            "tcp://*:*",
            "tcp://[::1]:5",
            "ipc:///run/memcast/publish.sock",
            "unixgram:///run/memcast/publish.dgram",
        ] {
            assert_eq!(problem(e), None, "{e}");
        }
    }

    #[test]
    fn each_mistake_names_the_part_that_is_wrong() {
        says(
            "epgm://eth0",
            "quote the value: \"epgm://eth0;239.192.1.1:5555\"",
        );
        says("epgm://239.192.1.1:5555", "no interface");
        says("epgm://eth0;10.0.0.1:5555", "not a multicast address");
        says("epgm://eth0;mygroup:5555", "not an IPv4 address");
        says("epgm://eth0;239.192.1.1", "no port after the group");
        says("epgm://;239.192.1.1:5555", "bad interface");
        says("epgm://eth0;239.192.1.1:0", "bad port");
        says("tcp://127.0.0.1", "no port");
        says("tcp://:5", "bad address");
        says("udp://h:1", "unknown transport udp://");
        says("127.0.0.1:5555", "no transport");
        says("ipc://", "socket path");
        says("unixgram://", "socket path");
        says(&format!("unixgram:///{}", "d".repeat(110)), "too long");
    }

    #[test]
    fn a_multicast_port_range_is_one_endpoint_per_port() {
        assert_eq!(
            expand_ports("epgm://eth0;239.192.1.1:5555-5557").unwrap(),
            [
                "epgm://eth0;239.192.1.1:5555",
                "epgm://eth0;239.192.1.1:5556",
                "epgm://eth0;239.192.1.1:5557"
            ]
        );
        assert_eq!(
            expand_ports("pgm://10.0.0.1;239.192.1.1:7-7").unwrap(),
            ["pgm://10.0.0.1;239.192.1.1:7"]
        );
        for one in [EXAMPLE, "tcp://127.0.0.1:7712", "ipc:///run/x-1:2"] {
            assert_eq!(expand_ports(one).unwrap(), [one]);
        }
        for bad in ["5557-5555", "0-3", "1-65536", "a-b", "5555-5619"] {
            let e = expand_ports(&format!("epgm://eth0;239.192.1.1:{bad}")).unwrap_err();
            assert!(e.contains("bad port range"), "{bad}: {e}");
        }
        assert_eq!(
            expand_ports("epgm://eth0;239.192.1.1:5555-5618")
                .unwrap()
                .len(),
            64
        );
    }
}
