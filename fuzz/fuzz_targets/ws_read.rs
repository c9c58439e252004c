//! The WebSocket read side of `/ws`: arbitrary bytes as a client's TCP stream (after the
//! handshake), read by the gateway's own socket (the `/ws` settings, its own frame reader, the
//! read-error close codes and the closing linger) through the conformance echo. The first byte
//! sets the pipe's capacity, so frames arrive in pieces of every size. The session must not
//! panic, and must end once the client's stream has ended.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use holdfast_gateway::echo::{echo_stream, EchoLimits};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // Paused time: the close and linger timeouts pass at once when nothing else can run.
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pipe, stream)) = data.split_first() else {
        return;
    };
    let stream = stream.to_vec();
    runtime().block_on(async move {
        let (mut client, server) = tokio::io::duplex(usize::from(pipe) + 1);
        // A small limit, so oversized messages and frames are within reach of the inputs.
        let limits = EchoLimits {
            max_message_bytes: 1024,
        };
        let session = tokio::spawn(echo_stream(server, Vec::new(), limits));
        let peer = async move {
            let (mut rx, mut tx) = tokio::io::split(&mut client);
            let write = async {
                let _ = tx.write_all(&stream).await;
                let _ = tx.shutdown().await;
            };
            let read = async {
                let mut sink = Vec::new();
                let _ = rx.read_to_end(&mut sink).await;
            };
            tokio::join!(write, read);
        };
        let ended = tokio::time::timeout(Duration::from_secs(600), async {
            peer.await;
            session.await
        })
        .await;
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the session panicked: {e}"),
            Err(_) => panic!("the session did not end after the client's stream ended"),
        }
    });
});
