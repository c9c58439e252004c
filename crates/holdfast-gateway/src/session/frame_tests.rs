#![allow(clippy::unwrap_used)]

use holdfast_protocol::CloseCode;

use super::*;

const LIMITS: Limits = Limits {
    max_message: 1000,
    max_frame: 1000,
};

/// Every message `input` yields, fed in pieces of `sizes` (cycled) bytes; the error ends it.
fn read_in_pieces(input: &[u8], sizes: &[usize]) -> (Vec<Message>, Option<WsError>) {
    let mut reader = Reader::new(LIMITS, Vec::new());
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = sizes.iter().cycle();
    while at < input.len() {
        let n = (*sizes.next().unwrap()).min(input.len() - at);
        let mut piece = input[at..at + n].to_vec();
        at += n;
        let mut next = reader.feed(&mut piece);
        loop {
            match next {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
            next = reader.next_buffered();
        }
    }
    assert_eq!(reader.held(), 0, "nothing held once all is read");
    (out, None)
}

fn read_all(input: &[u8]) -> (Vec<Message>, Option<WsError>) {
    read_in_pieces(input, &[input.len().max(1)])
}

fn code(input: &[u8]) -> Option<CloseCode> {
    let (_, e) = read_all(input);
    e.expect("an error").close_code()
}

#[test]
fn a_fragmented_message_with_a_ping_inside() {
    let mut input = client_frame(0x01, b"hel");
    input.extend(client_frame(0x89, b"p"));
    input.extend(client_frame(0x00, b"lo "));
    input.extend(client_frame(0x8a, b"q"));
    input.extend(client_frame(0x80, b"world"));
    input.extend(client_frame(0x02, &[1, 2]));
    input.extend(client_frame(0x80, &[3]));
    let (msgs, e) = read_all(&input);
    assert!(e.is_none(), "{e:?}");
    assert_eq!(
        msgs,
        vec![
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::from_static(b"q")),
            Message::Text("hello world".into()),
            Message::Binary(Bytes::from_static(&[1, 2, 3])),
        ]
    );
}

#[test]
fn split_reads_at_every_byte_boundary() {
    let long = "ü".repeat(200);
    let mut input = client_frame(0x81, b"one");
    input.extend(client_frame(0x01, "tw".as_bytes()));
    input.extend(client_frame(0x89, b""));
    input.extend(client_frame(0x80, "o".as_bytes()));
    input.extend(client_frame(0x81, long.as_bytes()));
    input.extend(client_frame(0x88, &[0x03, 0xe8, b'o', b'k']));
    let (whole, e) = read_all(&input);
    assert!(e.is_none());
    assert_eq!(whole.len(), 5);
    for split in 1..input.len() {
        let (mut first, second) = (input[..split].to_vec(), input[split..].to_vec());
        let mut reader = Reader::new(LIMITS, Vec::new());
        let mut got = Vec::new();
        for piece in [&mut first, &mut second.clone()] {
            let mut next = reader.feed(piece);
            while let Some(m) = next.unwrap() {
                got.push(m);
                next = reader.next_buffered();
            }
        }
        assert_eq!(got, whole, "split at {split}");
        assert_eq!(reader.held(), 0);
    }
    for sizes in [&[1usize][..], &[2], &[3, 7], &[13, 1, 5]] {
        assert_eq!(read_in_pieces(&input, sizes).0, whole, "{sizes:?}");
    }
}

#[test]
fn the_early_bytes_come_first() {
    let mut early = client_frame(0x81, b"a");
    early.extend(&client_frame(0x81, b"bc")[..3]);
    let mut reader = Reader::new(LIMITS, early);
    assert_eq!(
        reader.next_buffered().unwrap(),
        Some(Message::Text("a".into()))
    );
    assert_eq!(reader.next_buffered().unwrap(), None);
    let mut rest = client_frame(0x81, b"bc")[3..].to_vec();
    assert_eq!(
        reader.feed(&mut rest).unwrap(),
        Some(Message::Text("bc".into()))
    );
    assert_eq!(reader.held(), 0);
}

#[test]
fn protocol_errors_are_1002() {
    let p = Some(CloseCode::ProtocolError);
    // Reserved bits.
    for rsv in [0x40, 0x20, 0x10] {
        assert_eq!(code(&client_frame(0x81 | rsv, b"x")), p);
    }
    // Reserved opcodes, data and control.
    for op in [0x3, 0x7, 0xb, 0xf] {
        assert_eq!(code(&client_frame(0x80 | op, b"")), p);
    }
    // Unmasked, found on the first two bytes.
    assert_eq!(code(&[0x81, 0x05]), p);
    // A control frame over 125 bytes, or fragmented.
    assert_eq!(code(&client_frame(0x89, &[0u8; 126])), p);
    assert_eq!(code(&client_frame(0x09, b"")), p);
    assert_eq!(code(&client_frame(0x08, b"")), p);
    // A continuation without a message, a new message inside a fragmented one.
    assert_eq!(code(&client_frame(0x80, b"x")), p);
    let mut input = client_frame(0x01, b"a");
    input.extend(client_frame(0x81, b"b"));
    assert_eq!(code(&input), p);
    let mut input = client_frame(0x02, b"a");
    input.extend(client_frame(0x02, b"b"));
    assert_eq!(code(&input), p);
    // A close frame with a one-byte payload.
    assert_eq!(code(&client_frame(0x88, &[3])), p);
}

#[test]
fn invalid_utf8_is_1007() {
    let bad = Some(CloseCode::InvalidPayload);
    assert_eq!(code(&client_frame(0x81, &[b'a', 0xff])), bad);
    assert_eq!(code(&client_frame(0x81, &[0xce])), bad, "cut short");
    // A close reason.
    assert_eq!(code(&client_frame(0x88, &[0x03, 0xe8, 0xff])), bad);
    // Across fragments: fails on the fragment that makes the prefix invalid, before the rest.
    let mut input = client_frame(0x01, "κό".as_bytes());
    input.extend(client_frame(0x00, &[0xf4, 0x90])); // past U+10FFFF
    let (msgs, e) = read_all(&input);
    assert!(msgs.is_empty());
    assert_eq!(e.unwrap().close_code(), bad);
    // A character split between fragments is fine; one left incomplete at the end is not.
    let mut input = client_frame(0x01, &"κ".as_bytes()[..1]);
    input.extend(client_frame(0x80, &"κ".as_bytes()[1..]));
    assert_eq!(read_all(&input).0, vec![Message::Text("κ".into())]);
    let mut input = client_frame(0x01, b"a");
    input.extend(client_frame(0x80, &"κ".as_bytes()[..1]));
    assert_eq!(code(&input), bad);
}

#[test]
fn too_big_is_1009_at_the_header() {
    let big = Some(CloseCode::MessageTooBig);
    assert_eq!(code(&client_frame(0x82, &[0u8; 1001])), big);
    assert_eq!(read_all(&client_frame(0x82, &[0u8; 1000])).0.len(), 1);
    // The length alone is enough: no payload, no mask.
    assert_eq!(code(&[0x82, 0x80 | 126, 0x03, 0xe9]), big);
    // 2^63 and 2^64 - 1, refused with nothing allocated.
    for len in [1u64 << 63, u64::MAX] {
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&len.to_be_bytes());
        let mut reader = Reader::new(LIMITS, Vec::new());
        let e = reader.feed(&mut header).unwrap_err();
        assert_eq!(e.close_code(), big);
        assert_eq!(reader.held(), 0);
    }
    // A fragmented message over the limit, at the header of the fragment that passes it.
    let mut input = client_frame(0x02, &[0u8; 600]);
    input.extend(&client_frame(0x80, &[0u8; 401])[..4]);
    assert_eq!(code(&input), big);
}

#[test]
fn a_frame_waiting_for_its_payload_holds_only_what_arrived() {
    let mut reader = Reader::new(LIMITS, Vec::new());
    let f = client_frame(0x82, &[9u8; 1000]);
    let mut head = f[..20].to_vec();
    assert_eq!(reader.feed(&mut head).unwrap(), None);
    assert!(reader.held() < 100, "{}", reader.held());
}

#[test]
fn control_frames_and_close_payloads() {
    let (msgs, _) = read_all(&client_frame(0x88, b""));
    assert_eq!(msgs, vec![Message::Close(None)]);
    let (msgs, _) = read_all(&client_frame(0x88, &[0x0f, 0xa1, b'h', b'i']));
    match &msgs[..] {
        [Message::Close(Some(f))] => {
            assert_eq!(f.code, 4001);
            assert_eq!(f.reason.as_str(), "hi");
        }
        other => panic!("{other:?}"),
    }
    let (msgs, _) = read_all(&client_frame(0x89, &[5u8; 125]));
    assert_eq!(msgs, vec![Message::Ping(Bytes::from(vec![5u8; 125]))]);
}

#[test]
fn unmasking_matches_the_byte_by_byte_form() {
    let key = [1, 2, 3, 250];
    for len in 0..40 {
        let data: Vec<u8> = (0..len as u8).collect();
        let mut fast = data.clone();
        unmask(&mut fast, key);
        let slow: Vec<u8> = data
            .iter()
            .zip(key.iter().cycle())
            .map(|(b, k)| b ^ k)
            .collect();
        assert_eq!(fast, slow);
    }
}

#[test]
fn close_codes_that_may_be_echoed() {
    for c in [1000, 1001, 1002, 1003, 1007, 1011, 1013, 3000, 4999] {
        assert!(close_code_allowed(c), "{c}");
    }
    for c in [
        0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535,
    ] {
        assert!(!close_code_allowed(c), "{c}");
    }
}

#[test]
fn a_stream_that_never_ends_on_a_frame_boundary_holds_only_the_unparsed_bytes() {
    let mut reader = Reader::new(LIMITS, Vec::new());
    let mut input = Vec::new();
    for n in 0..2_000u32 {
        input.extend(client_frame(0x81, n.to_string().as_bytes()));
    }
    let mut got = 0;
    for piece in input.chunks(37) {
        let mut piece = piece.to_vec();
        let mut next = reader.feed(&mut piece);
        while let Some(m) = next.unwrap() {
            assert_eq!(m, Message::Text(got.to_string().into()));
            got += 1;
            next = reader.next_buffered();
        }
        assert!(reader.held() <= 128, "{} B held", reader.held());
    }
    assert_eq!(got, 2_000);
}

#[test]
fn a_large_frame_grows_the_buffer_with_what_arrived() {
    let limits = Limits {
        max_message: 1 << 20,
        max_frame: 1 << 20,
    };
    let mut reader = Reader::new(limits, Vec::new());
    let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let f = client_frame(0x82, &payload);
    let mut head = f[..100].to_vec();
    assert_eq!(reader.feed(&mut head).unwrap(), None);
    let mut at = 100;
    let mut got = None;
    while got.is_none() {
        let polled = reader.read_direct(|buf| {
            let n = buf.len().min(1000).min(f.len() - at);
            buf[..n].copy_from_slice(&f[at..at + n]);
            std::task::Poll::Ready(Ok(n))
        });
        let n = match polled {
            Some(std::task::Poll::Ready(Ok(n))) => n,
            // The rest fits the scratch buffer: read as usual.
            None => {
                let n = (f.len() - at).min(1000);
                let mut piece = f[at..at + n].to_vec();
                got = reader.feed(&mut piece).unwrap();
                n
            }
            other => panic!("{other:?}"),
        };
        at += n;
        // Proportional to what arrived (the vector doubles its capacity), not to the 200 KB
        // the length field announced.
        assert!(
            reader.held() <= 4 * at + 2 * SCRATCH,
            "{} B for {at}",
            reader.held()
        );
        if got.is_none() {
            got = reader.next_buffered().unwrap();
        }
    }
    assert_eq!(got, Some(Message::Binary(payload.into())));
    assert_eq!(reader.held(), 0);
}
