//! The secure connection over real TCP on loopback, including hostile peers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rs2p_base::handshake::LocalInfo;
use rs2p_base::net::{handshake, Role, SecureConnection};
use rs2p_base::{ConnectionError, HandshakeError, Keypair, LocalIdentity, Network};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

fn ident() -> LocalIdentity {
    LocalIdentity::new(Keypair::generate())
}

async fn pair(
    dialer: &LocalIdentity,
    dial_net: &Network,
    acceptor: &LocalIdentity,
    accept_net: &Network,
    expected: Option<rs2p_base::PeerId>,
) -> (
    Result<SecureConnection, HandshakeError>,
    Result<SecureConnection, HandshakeError>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (acc, net2) = (acceptor.clone(), accept_net.clone());
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        handshake(
            s,
            Role::Responder,
            &acc,
            &net2,
            LocalInfo::default(),
            MAX,
            TIMEOUT,
        )
        .await
    });
    let s = TcpStream::connect(addr).await.unwrap();
    let client = handshake(
        s,
        Role::Initiator(expected),
        dialer,
        dial_net,
        LocalInfo::default(),
        MAX,
        TIMEOUT,
    )
    .await;
    (client, server.await.unwrap())
}

#[tokio::test]
async fn frames_flow_both_ways_and_large_frames_span_many_noise_messages() {
    let (a, b) = (ident(), ident());
    let net = Network::named("t");
    let (c, s) = pair(&a, &net, &b, &net, Some(b.peer_id())).await;
    let (mut c, mut s) = (c.unwrap(), s.unwrap());
    assert_eq!(c.remote.peer_id, b.peer_id());
    assert_eq!(s.remote.peer_id, a.peer_id());
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    c.writer.queue(b"one");
    c.writer.queue(&big);
    c.writer.queue(b"");
    c.writer.flush().await.unwrap();
    assert_eq!(&s.reader.next_frame().await.unwrap().unwrap()[..], b"one");
    assert_eq!(&s.reader.next_frame().await.unwrap().unwrap()[..], &big[..]);
    assert_eq!(&s.reader.next_frame().await.unwrap().unwrap()[..], b"");
    s.writer.queue(b"back");
    s.writer.shutdown().await.unwrap();
    assert_eq!(&c.reader.next_frame().await.unwrap().unwrap()[..], b"back");
    assert!(
        c.reader.next_frame().await.unwrap().is_none(),
        "clean close is None"
    );
}

#[tokio::test]
async fn a_wrong_psk_fails_on_both_sides_and_no_frame_is_delivered() {
    let (a, b) = (ident(), ident());
    let (c, s) = pair(&a, &Network::named("one"), &b, &Network::named("two"), None).await;
    assert!(matches!(s, Err(HandshakeError::Noise)), "responder: {s:?}");
    assert!(matches!(c, Err(HandshakeError::Closed)), "initiator: {c:?}");
}

#[tokio::test]
async fn a_private_network_refuses_the_public_one_of_the_same_name() {
    let (a, b) = (ident(), ident());
    let (c, s) = pair(
        &a,
        &Network::named("x"),
        &b,
        &Network::private("x", [7; 32]),
        None,
    )
    .await;
    assert!(c.is_err() && s.is_err());
}

#[tokio::test]
async fn a_dialed_peer_with_another_id_is_refused() {
    let (a, b, other) = (ident(), ident(), ident());
    let net = Network::named("t");
    let (c, _s) = pair(&a, &net, &b, &net, Some(other.peer_id())).await;
    match c {
        Err(HandshakeError::UnexpectedPeer { expected, actual }) => {
            assert_eq!(expected, other.peer_id());
            assert_eq!(actual, b.peer_id());
        }
        other => panic!("expected UnexpectedPeer, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_refused() {
    let b = ident();
    let net = Network::named("t");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        handshake(
            s,
            Role::Responder,
            &b,
            &net,
            LocalInfo::default(),
            MAX,
            TIMEOUT,
        )
        .await
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x00\x30GET / HTTP/1.1\r\nHost: example\r\n\r\nxxxxxxxxxxxxxxxxx")
        .await
        .unwrap();
    assert!(matches!(server.await.unwrap(), Err(HandshakeError::Noise)));
}

#[tokio::test]
async fn a_peer_that_sends_nothing_times_out() {
    let b = ident();
    let net = Network::named("t");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        handshake(
            s,
            Role::Responder,
            &b,
            &net,
            LocalInfo::default(),
            MAX,
            Duration::from_millis(200),
        )
        .await
    });
    let _silent = TcpStream::connect(addr).await.unwrap();
    assert!(matches!(
        server.await.unwrap(),
        Err(HandshakeError::Timeout)
    ));
}

#[tokio::test]
async fn a_4_gib_frame_header_closes_the_connection_after_the_header() {
    let (a, b) = (ident(), ident());
    let net = Network::named("t");
    let (c, s) = pair(&a, &net, &b, &net, None).await;
    let (mut c, mut s) = (c.unwrap(), s.unwrap());
    c.writer.queue_raw_for_tests(&[0xff, 0xff, 0xff, 0xff]);
    c.writer.flush().await.unwrap();
    match s.reader.next_frame().await {
        Err(ConnectionError::Wire(rs2p_wire::WireError::FrameTooLarge { len, max })) => {
            assert_eq!(len, u64::from(u32::MAX));
            assert_eq!(max, MAX);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tampered_transport_message_fails_to_decrypt() {
    // A man in the middle flips one bit of the first transport message after the handshake.
    let (a, b) = (ident(), ident());
    let net = Network::named("t");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut inbound, _) = proxy.accept().await.unwrap();
        let mut outbound = TcpStream::connect(server_addr).await.unwrap();
        let (mut ir, mut iw) = inbound.split();
        let (mut or, mut ow) = outbound.split();
        let up = async {
            // Forward msg 1 and msg 3 as they are, then corrupt what follows.
            let mut seen = 0usize;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = ir.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                seen += 1;
                if seen > 2 {
                    buf[n - 1] ^= 1;
                }
                if ow.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        };
        let down = tokio::io::copy(&mut or, &mut iw);
        let _ = tokio::join!(up, down);
    });
    let b2 = b.clone();
    let net2 = net.clone();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut conn = handshake(
            s,
            Role::Responder,
            &b2,
            &net2,
            LocalInfo::default(),
            MAX,
            TIMEOUT,
        )
        .await
        .unwrap();
        conn.reader.next_frame().await
    });
    let s = TcpStream::connect(proxy_addr).await.unwrap();
    let mut c = handshake(
        s,
        Role::Initiator(None),
        &a,
        &net,
        LocalInfo::default(),
        MAX,
        TIMEOUT,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.writer.queue(b"hello");
    c.writer.flush().await.unwrap();
    assert!(matches!(
        server.await.unwrap(),
        Err(ConnectionError::Decrypt)
    ));
}
