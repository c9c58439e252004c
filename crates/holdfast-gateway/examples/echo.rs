//! A WebSocket echo server on the gateway's `/ws` layer, for the Autobahn|Testsuite
//! (`scripts/autobahn/run`).
//!
//! Usage: `echo [ADDR] [MAX_MESSAGE_BYTES]` (default `127.0.0.1:9001`, and the `/ws` default
//! limit). Everything but the size limit is `/ws`'s own: see `holdfast_gateway::echo`.

use holdfast_gateway::echo::{serve, EchoLimits};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let mut limits = EchoLimits::default();
    if let Some(max) = args.next() {
        limits.max_message_bytes = max.parse()?;
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "echo: listening on ws://{} (max message {} bytes)",
        listener.local_addr()?,
        limits.max_message_bytes
    );
    serve(listener, limits).await;
    Ok(())
}
