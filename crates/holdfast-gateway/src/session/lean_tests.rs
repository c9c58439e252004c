//! Tests of the lean socket: framing on the wire, release of the write buffer, the bounds,
//! the close handshake.
#![allow(clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::Role;
use tungstenite::Message as WsMessage;

use super::*;
use crate::session::frame::client_frame;

fn config(max_write: usize) -> SocketConfig {
    SocketConfig {
        max_message: 1 << 20,
        max_frame: 1 << 20,
        max_write,
    }
}

/// A server socket over an in-memory pipe, and a plain tungstenite client on the other end.
async fn pair() -> (LeanSocket<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let server = LeanSocket::new(a, Vec::new(), config(1 << 20));
    let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
    (server, client)
}

fn text(m: Option<Result<Message, WsError>>) -> String {
    match m {
        Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn frames_reach_a_tungstenite_client_and_the_buffer_is_released() {
    let (mut server, mut client) = pair().await;
    let big = "x".repeat(70_000);
    for text in ["hello", &"y".repeat(300), &big] {
        server.feed(Message::Text(text.into())).await.unwrap();
    }
    server
        .feed(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    server.flush().await.unwrap();
    assert_eq!(server.io.out.capacity(), 0, "released after the flush");
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        WsMessage::text("hello")
    );
    assert_eq!(client.next().await.unwrap().unwrap().len(), 300);
    assert_eq!(
        client.next().await.unwrap().unwrap().into_text().unwrap(),
        big
    );
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        WsMessage::binary(vec![1u8, 2, 3])
    );

    // Client frames, and a ping answered in order with the data.
    client.send(WsMessage::text("from client")).await.unwrap();
    client.send(WsMessage::Ping("p".into())).await.unwrap();
    client.send(WsMessage::text("after ping")).await.unwrap();
    assert_eq!(text(server.next().await), "from client");
    assert!(matches!(
        server.next().await.unwrap().unwrap(),
        Message::Ping(_)
    ));
    assert_eq!(text(server.next().await), "after ping");
    assert_eq!(server.reader.held(), 0, "nothing held while idle");
    server
        .send(Message::Text("after pong".into()))
        .await
        .unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        WsMessage::Pong("p".into())
    );
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        WsMessage::text("after pong")
    );

    // Close from the server: data is refused afterwards, the client sees the code.
    server
        .send(Message::Close(Some(CloseFrame {
            code: 4001,
            reason: Utf8Bytes::from_static("slow"),
        })))
        .await
        .unwrap();
    assert!(server.send(Message::Text("late".into())).await.is_err());
    match client.next().await.unwrap().unwrap() {
        WsMessage::Close(Some(f)) => assert_eq!(u16::from(f.code), 4001),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_client_close_is_answered() {
    let (mut server, mut client) = pair().await;
    client.close(None).await.unwrap();
    assert!(matches!(
        server.next().await.unwrap().unwrap(),
        Message::Close(None)
    ));
    server.flush().await.unwrap();
    assert!(matches!(
        client.next().await.unwrap().unwrap(),
        WsMessage::Close(_)
    ));
    assert!(server.next().await.is_none(), "reads end after the close");
    assert!(server.send(Message::Text("late".into())).await.is_err());
}

#[tokio::test]
async fn a_close_code_is_echoed_and_a_forbidden_one_answered_with_1002() {
    for (code, answer) in [(4001u16, 4001u16), (1000, 1000), (5000, 1002), (1005, 1002)] {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut server = LeanSocket::new(a, Vec::new(), config(4096));
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        b.write_all(&client_frame(0x88, &payload)).await.unwrap();
        match server.next().await.unwrap().unwrap() {
            Message::Close(Some(f)) => assert_eq!(f.code, answer),
            other => panic!("unexpected {other:?}"),
        }
        server.flush().await.unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..2], &[0x88, got[1]]);
        assert_eq!(u16::from_be_bytes([got[2], got[3]]), answer, "{code}");
    }
}

#[tokio::test]
async fn after_the_servers_close_reads_go_on_until_the_clients_close() {
    let (mut server, client) = pair().await;
    server
        .send(Message::Close(Some(CloseFrame {
            code: 1001,
            reason: Utf8Bytes::from_static(""),
        })))
        .await
        .unwrap();
    let mut raw = client.into_inner();
    raw.write_all(&client_frame(0x81, b"late")).await.unwrap();
    raw.write_all(&client_frame(0x89, b"no pong"))
        .await
        .unwrap();
    raw.write_all(&client_frame(0x88, &1001u16.to_be_bytes()))
        .await
        .unwrap();
    assert_eq!(text(server.next().await), "late");
    assert!(matches!(
        server.next().await.unwrap().unwrap(),
        Message::Ping(_)
    ));
    assert!(matches!(
        server.next().await.unwrap().unwrap(),
        Message::Close(Some(_))
    ));
    assert!(server.next().await.is_none());
    server.flush().await.unwrap();
    // Only the server's close went out: no pong after it, no second close.
    let mut got = [0u8; 4];
    raw.read_exact(&mut got).await.unwrap();
    assert_eq!(got, [0x88, 2, 0x03, 0xe9]);
    drop(server);
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn after_a_broken_frame_the_close_goes_out_and_the_rest_is_discarded() {
    let (a, mut b) = tokio::io::duplex(4096);
    let mut server = LeanSocket::new(a, Vec::new(), config(4096));
    // Unmasked.
    b.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let e = server.next().await.unwrap().unwrap_err();
    assert_eq!(
        e.close_code(),
        Some(holdfast_protocol::CloseCode::ProtocolError)
    );
    server
        .send(Message::Close(Some(CloseFrame {
            code: 1002,
            reason: Utf8Bytes::from_static(""),
        })))
        .await
        .unwrap();
    b.write_all(&client_frame(0x81, b"ignored")).await.unwrap();
    b.shutdown().await.unwrap();
    assert!(server.next().await.is_none());
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, [0x88, 2, 0x03, 0xea], "the close, then the end");
}

#[tokio::test]
async fn the_early_bytes_are_read_first() {
    let (a, mut b) = tokio::io::duplex(4096);
    let mut bytes = client_frame(0x81, b"first");
    let second = client_frame(0x82, &[7u8; 300]);
    bytes.extend_from_slice(&second);
    // The request's leftover: the first frame and part of the second.
    let early = bytes[..bytes.len() - 100].to_vec();
    let mut server = LeanSocket::new(a, early, config(4096));
    assert_eq!(text(server.next().await), "first");
    b.write_all(&bytes[bytes.len() - 100..]).await.unwrap();
    match server.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert_eq!(&b[..], &[7u8; 300][..]),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.reader.held(), 0);
}

/// The same frames, whatever the size of each read: one byte at a time through the pipe.
#[tokio::test]
async fn frames_arriving_a_byte_at_a_time() {
    let (a, mut b) = tokio::io::duplex(1);
    let mut server = LeanSocket::new(a, Vec::new(), config(1 << 20));
    let big = "é".repeat(3_000);
    let mut bytes = client_frame(0x01, "frag".as_bytes());
    bytes.extend(client_frame(0x89, b"ping"));
    bytes.extend(client_frame(0x80, "ment".as_bytes()));
    bytes.extend(client_frame(0x81, big.as_bytes()));
    bytes.extend(client_frame(0x82, &[]));
    let writer = tokio::spawn(async move {
        for byte in bytes {
            b.write_all(&[byte]).await.unwrap();
        }
        b
    });
    assert!(matches!(
        server.next().await.unwrap().unwrap(),
        Message::Ping(p) if &p[..] == b"ping"
    ));
    assert_eq!(text(server.next().await), "fragment");
    assert_eq!(text(server.next().await), big);
    assert!(matches!(
        server.next().await.unwrap().unwrap(),
        Message::Binary(b) if b.is_empty()
    ));
    let mut b = writer.await.unwrap();
    let mut pong = [0u8; 6];
    // The pipe holds one byte: the pong is read while it is written.
    let (flushed, read) = tokio::join!(server.flush(), b.read_exact(&mut pong));
    flushed.unwrap();
    read.unwrap();
    assert_eq!(&pong, b"\x8a\x04ping");
}

#[tokio::test]
async fn a_large_message_is_read_whole() {
    let (mut server, mut client) = pair().await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let send = tokio::spawn(async move {
        client.send(WsMessage::binary(big.clone())).await.unwrap();
        (client, big)
    });
    let got = server.next().await.unwrap().unwrap();
    let (_client, big) = send.await.unwrap();
    assert_eq!(got, Message::Binary(big.into()));
    assert_eq!(server.reader.held(), 0);
}

#[tokio::test]
async fn more_than_the_bound_is_refused() {
    let (mut server, _client) = pair().await;
    server.io.max = 1_000;
    assert!(server
        .start_send_unpin(Message::Text("a".repeat(900).into()))
        .is_ok());
    assert!(server
        .start_send_unpin(Message::Text("b".repeat(200).into()))
        .is_err());
}

#[tokio::test]
async fn pings_from_a_client_that_never_reads_hit_the_bound() {
    let (a, b) = tokio::io::duplex(256);
    let mut server = LeanSocket::new(a, Vec::new(), config(2_000));
    let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
    let flood = tokio::spawn(async move {
        for _ in 0..200 {
            let ping = WsMessage::Ping(vec![0u8; 100].into());
            if client.send(ping).await.is_err() {
                break;
            }
        }
    });
    let mut failed = false;
    for _ in 0..200 {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), server.next());
        match next.await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) => {
                failed = true;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(failed, "the pongs nobody reads are bounded");
    assert!(server.io.pending() <= 2_000);
    flood.abort();
}

#[test]
fn frames_carry_the_three_length_forms() {
    let mut io = LeanIo::new((), usize::MAX);
    io.push_frame(0x1, b"hi");
    assert_eq!(io.out, b"\x81\x02hi");
    io.out.clear();
    io.push_frame(0x1, &[b'a'; 300]);
    assert_eq!(&io.out[..4], &[0x81, 126, 1, 44]);
    assert_eq!(io.out.len(), 304);
    io.out.clear();
    io.push_frame(0x2, &vec![0u8; 70_000]);
    assert_eq!(&io.out[..2], &[0x82, 127]);
    assert_eq!(&io.out[2..10], &70_000u64.to_be_bytes());
    assert_eq!(io.out.len(), 70_010);
}

#[test]
fn a_close_reason_is_cut_on_a_character_boundary() {
    let mut io = LeanIo::new((), usize::MAX);
    io.push_close(Some((1000, &"é".repeat(100)))).unwrap();
    assert_eq!(io.out[1], 2 + 122);
    assert!(std::str::from_utf8(&io.out[4..]).is_ok());
}

#[test]
fn the_socket_is_small() {
    let size = std::mem::size_of::<LeanSocket<crate::upgrade::SessionIo>>();
    eprintln!("LeanSocket<SessionIo>: {size} B");
    // Measured at 128 bytes (376 with tungstenite's context inside).
    assert!(size <= 160, "{size} B");
}
