//! The PROXY protocol (HAProxy, v1 text and v2 binary) on the plain-HTTP listener, for load
//! balancers that pass TCP and prepend the original client's address (AWS NLB, HAProxy,
//! Envoy). Accepted only from `server.trusted_proxies`; the header is mandatory on such a
//! listener, and a connection without a valid one is closed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;

/// The 12-byte signature that starts a v2 header.
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Longest v1 header (the spec's bound).
const V1_MAX: usize = 107;
/// Longest v2 address block accepted (addresses plus TLVs).
const V2_MAX: usize = 512;

/// Why a PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Not a PROXY header at all.
    #[error("no PROXY protocol header")]
    Missing,
    /// A PROXY header that does not parse.
    #[error("malformed PROXY protocol header")]
    Malformed,
    /// The connection ended or failed while the header was read.
    #[error("connection ended before the PROXY protocol header")]
    Io,
}

/// Reads the header at the start of `stream`. `Ok(Some(client))` for a proxied connection;
/// `Ok(None)` for the proxy's own connections (v1 `UNKNOWN`, v2 `LOCAL`: health checks), whose
/// address is the proxy's.
pub async fn read_header<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut start = [0u8; 5];
    stream
        .read_exact(&mut start)
        .await
        .map_err(|_| ProxyHeaderError::Io)?;
    if &start == b"PROXY" {
        let mut line = start.to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(ProxyHeaderError::Malformed);
            }
            let byte = stream.read_u8().await.map_err(|_| ProxyHeaderError::Io)?;
            line.push(byte);
        }
        return parse_v1(&line);
    }
    if start[..] != V2_SIGNATURE[..5] {
        return Err(ProxyHeaderError::Missing);
    }
    let mut rest = [0u8; 11];
    stream
        .read_exact(&mut rest)
        .await
        .map_err(|_| ProxyHeaderError::Io)?;
    if rest[..7] != V2_SIGNATURE[5..] {
        return Err(ProxyHeaderError::Missing);
    }
    let (version_command, family) = (rest[7], rest[8]);
    let len = usize::from(u16::from_be_bytes([rest[9], rest[10]]));
    if version_command >> 4 != 2 || len > V2_MAX {
        return Err(ProxyHeaderError::Malformed);
    }
    let mut block = vec![0u8; len];
    stream
        .read_exact(&mut block)
        .await
        .map_err(|_| ProxyHeaderError::Io)?;
    parse_v2(version_command & 0x0F, family, &block)
}

fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyHeaderError::Malformed)?;
    let fields: Vec<&str> = text.trim_end_matches("\r\n").split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", family @ ("TCP4" | "TCP6"), source, _destination, port, _dport] => {
            let ip: IpAddr = source.parse().map_err(|_| ProxyHeaderError::Malformed)?;
            let port: u16 = port.parse().map_err(|_| ProxyHeaderError::Malformed)?;
            if (*family == "TCP4") != ip.is_ipv4() {
                return Err(ProxyHeaderError::Malformed);
            }
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(ProxyHeaderError::Malformed),
    }
}

fn parse_v2(command: u8, family: u8, block: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    match command {
        0 => return Ok(None),
        1 => {}
        _ => return Err(ProxyHeaderError::Malformed),
    }
    let take = |range: std::ops::Range<usize>| block.get(range).ok_or(ProxyHeaderError::Malformed);
    match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let ip: [u8; 4] = take(0..4)?
                .try_into()
                .map_err(|_| ProxyHeaderError::Malformed)?;
            let port = take(8..10)?;
            Ok(Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                u16::from_be_bytes([port[0], port[1]]),
            )))
        }
        0x21 => {
            let ip: [u8; 16] = take(0..16)?
                .try_into()
                .map_err(|_| ProxyHeaderError::Malformed)?;
            let port = take(32..34)?;
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(ip)),
                u16::from_be_bytes([port[0], port[1]]),
            )))
        }
        // UNSPEC (or a transport this proxy does not serve): the proxy's own connection.
        0x00 => Ok(None),
        _ => Err(ProxyHeaderError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
        let mut cursor = std::io::Cursor::new(bytes.to_vec());
        read_header(&mut cursor).await
    }

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    #[tokio::test]
    async fn v1_and_v2_headers() {
        let addr = |s: &str| Some(s.parse::<SocketAddr>().expect("addr"));
        assert_eq!(
            read(b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 80\r\nGET /").await,
            Ok(addr("192.0.2.1:56324"))
        );
        assert_eq!(
            read(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n").await,
            Ok(addr("[2001:db8::1]:4000"))
        );
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await, Ok(None));
        let v4 = [192, 0, 2, 9, 10, 0, 0, 1, 0x1F, 0x90, 0, 80];
        assert_eq!(read(&v2(1, 0x11, &v4)).await, Ok(addr("192.0.2.9:8080")));
        let mut v6 = [0u8; 36];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[32] = 0x01;
        v6[33] = 0x02;
        assert_eq!(read(&v2(1, 0x21, &v6)).await, Ok(addr("[2001::]:258")));
        assert_eq!(
            read(&v2(0, 0x00, &[])).await,
            Ok(None),
            "LOCAL: a health check"
        );
    }

    #[tokio::test]
    async fn refusals() {
        assert_eq!(
            read(b"GET / HTTP/1.1\r\n\r\n").await,
            Err(ProxyHeaderError::Missing)
        );
        assert_eq!(
            read(b"PROXY TCP4 not-an-ip 1.2.3.4 1 2\r\n").await,
            Err(ProxyHeaderError::Malformed)
        );
        assert_eq!(
            read(b"PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n").await,
            Err(ProxyHeaderError::Malformed)
        );
        assert_eq!(read(&[b'P'; 3]).await, Err(ProxyHeaderError::Io));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert_eq!(
            read(long.as_bytes()).await,
            Err(ProxyHeaderError::Malformed)
        );
        assert_eq!(
            read(&v2(1, 0x11, &[1, 2])).await,
            Err(ProxyHeaderError::Malformed),
            "short block"
        );
        let mut bad = v2(1, 0x11, &[0; 12]);
        bad[12] = 0x11;
        assert_eq!(
            read(&bad).await,
            Err(ProxyHeaderError::Malformed),
            "version 1 in a v2 header"
        );
    }
}
