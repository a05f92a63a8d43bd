//! Ports for servers the tests and the bench start. Included by the bench
//! too (`bench/src/main.rs`), so both pick ports the same way.

/// A port no socket uses now, below the kernel's ephemeral range. A port the
/// kernel hands out for port 0 lies in that range, where any outgoing
/// connection (the suite opens many) can take it before the server meant
/// for it binds it: the image test failed once that way.
pub fn free_port() -> u16 {
    let (low, high) = (10_000, ephemeral_range_start().clamp(11_000, 60_000));
    for _ in 0..1_000 {
        let offset = uuid::Uuid::new_v4().as_u128() % u128::from(high - low);
        let port = low + u16::try_from(offset).expect("below the range's width");
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {low} and {high}");
}

fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
