//! The reactor on real sockets.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected pair: the client (tokio's) and the server side on `reactor`.
async fn pair(listener: &TcpListener, reactor: &Arc<Reactor>) -> (TcpStream, Stream) {
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (server, _) = accepted.expect("accept");
    match reactor.adopt(server).expect("adopt") {
        Adopted::Polled(s) => (client.expect("connect"), s),
        Adopted::Tokio(_) => panic!("not adopted"),
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// Waits (up to 10 s: the task runs on another worker, which a busy machine may not
/// schedule at once) until the reactor's task has ended.
async fn until_stopped(reactor: &Reactor) {
    for _ in 0..10_000 {
        if !reactor.running() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the reactor's task did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_past_a_full_buffer_and_sees_the_end() {
    let reactor = Reactor::new().expect("epoll");
    let listener = listener().await;
    let (mut client, mut server) = pair(&listener, &reactor).await;
    client.write_all(b"hello").await.expect("write");
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"hello");
    // Far more than the socket buffers hold: the writer waits for write readiness.
    const N: usize = 16 << 20;
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < N {
            server.write_all(&chunk).await.expect("write");
            sent += chunk.len();
        }
        server
    });
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < N {
        let n = client.read(&mut buf).await.expect("read");
        assert!(n > 0);
        assert!(buf[..n].iter().all(|b| *b == 7));
        got += n;
    }
    let mut server = writer.await.expect("writer");
    drop(client);
    let n = server.read(&mut buf).await.expect("read at the end");
    assert_eq!(n, 0, "the end of the stream reads 0");
    assert_eq!(reactor.len(), 1);
    drop(server);
    assert!(reactor.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_ends_with_the_last_socket_and_starts_again() {
    let reactor = Reactor::new().expect("epoll");
    let listener = listener().await;
    assert!(!reactor.running());
    let (c1, s1) = pair(&listener, &reactor).await;
    let (c2, s2) = pair(&listener, &reactor).await;
    assert!(reactor.running());
    drop((s1, s2, c1, c2));
    until_stopped(&reactor).await;
    // A new socket (in a reused slot, of a new generation) starts it again and is served.
    let (mut client, mut server) = pair(&listener, &reactor).await;
    assert!(reactor.running());
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 3];
        server.read_exact(&mut buf).await.map(|_| buf)
    });
    tokio::task::yield_now().await;
    client.write_all(b"abc").await.expect("write");
    assert_eq!(&reader.await.expect("task").expect("read"), b"abc");
    until_stopped(&reactor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sockets_each_get_their_own_wake_ups() {
    let reactor = Reactor::new().expect("epoll");
    let listener = listener().await;
    let mut clients = Vec::new();
    let mut echoes = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let (client, mut server) = pair(&listener, &reactor).await;
        clients.push(client);
        echoes.spawn(async move {
            let mut buf = [0u8; 8];
            for _ in 0..3 {
                server.read_exact(&mut buf).await?;
                server.write_all(&buf).await?;
            }
            Ok::<_, io::Error>(())
        });
    }
    assert_eq!(reactor.len(), 300);
    for round in 0..3u8 {
        for (i, c) in clients.iter_mut().enumerate() {
            let msg = [(i % 251) as u8, round, 0, 0, 0, 0, 0, 1];
            c.write_all(&msg).await.expect("write");
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let mut buf = [0u8; 8];
            c.read_exact(&mut buf).await.expect("echo");
            assert_eq!(buf, [(i % 251) as u8, round, 0, 0, 0, 0, 0, 1]);
        }
    }
    while let Some(r) = echoes.join_next().await {
        r.expect("task").expect("echo");
    }
    assert!(reactor.is_empty());
    until_stopped(&reactor).await;
}
