//! The DNS and TCP hops: the only I/O in this crate, behind the `net`
//! feature, so the decoders stay free of a runtime.

use std::net::SocketAddr;

use super::{fail, Failure, Report, STEP_TIMEOUT};

/// The first address of `host:port`; `key` names the setting to fix.
pub async fn resolve(host: &str, port: u16, key: &str) -> Result<SocketAddr, Failure> {
    match tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| {
            fail(
                format!("{host} has no address"),
                format!("check {key} and the DNS record"),
            )
        }),
        Ok(Err(e)) => Err(fail(
            format!("cannot resolve {host}: {e}"),
            format!("check the name in {key} and this machine's DNS (/etc/resolv.conf)"),
        )),
        Err(_) => Err(fail(
            format!(
                "resolving {host} took more than {} s",
                STEP_TIMEOUT.as_secs()
            ),
            "check this machine's DNS servers (/etc/resolv.conf)",
        )),
    }
}

/// A TCP connection to `addr`: refused (nothing listens) and timed out
/// (a firewall drops the packets) are different problems with different fixes.
pub async fn tcp(
    addr: SocketAddr,
    key: &str,
    refused_fix: &str,
    timeout_fix: &str,
) -> Result<String, Failure> {
    match tokio::time::timeout(STEP_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(format!("{addr} accepts connections")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(fail(
            format!("{addr} refused the connection: nothing listens there ({key})"),
            refused_fix,
        )),
        Ok(Err(e)) => Err(fail(format!("cannot connect to {addr}: {e}"), timeout_fix)),
        Err(_) => Err(fail(
            format!(
                "{addr} did not answer within {} s: a firewall is dropping the packets",
                STEP_TIMEOUT.as_secs()
            ),
            timeout_fix,
        )),
    }
}

/// The `broker dns` and `broker tcp` hops to `host:port`: the address when
/// both pass, else the name of the hop that failed (a failed DNS hop records
/// the TCP hop as skipped behind it).
pub async fn broker_reachable(
    r: &mut Report,
    host: &str,
    port: u16,
) -> Result<SocketAddr, &'static str> {
    let addr = match resolve(host, port, "mqtt.host").await {
        Ok(addr) => addr,
        Err(f) => {
            r.hop("broker dns", Err(f));
            r.skip("broker dns", ["broker tcp"]);
            return Err("broker dns");
        }
    };
    r.hop("broker dns", Ok(format!("{host} is {}", addr.ip())));
    let firewall = format!(
        "open TCP {port} towards the broker (ops/firewall.sh on the broker's VM, and the cloud's security group)"
    );
    let reached = tcp(
        addr,
        "mqtt.port",
        "start the broker, or fix mqtt.host/mqtt.port",
        &firewall,
    )
    .await;
    if r.hop("broker tcp", reached) {
        Ok(addr)
    } else {
        Err("broker tcp")
    }
}
