//! The TypeScript client's protocol constants must match this crate.
//!
//! `clients/ts/src/generated.ts` is the output of `examples/gen_ts.rs`; this test renders it
//! again and fails when the committed file differs, naming the command that regenerates it.

#[allow(dead_code)]
#[path = "../examples/gen_ts.rs"]
mod gen_ts;

use std::path::PathBuf;

#[test]
fn committed_typescript_constants_match_the_protocol() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/ts/src/generated.ts");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let expected = gen_ts::render();
    if committed != expected {
        let line = committed
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_owned(), |n| format!("line {}", n + 1));
        panic!(
            "clients/ts/src/generated.ts is stale (first difference at {line}); regenerate it with \
             `cargo run -q -p holdfast-protocol --example gen_ts > clients/ts/src/generated.ts`"
        );
    }
}

#[test]
fn every_close_code_is_listed_with_its_reconnect_rule() {
    let text = gen_ts::render();
    for code in holdfast_protocol::CloseCode::ALL {
        let entry = format!(
            "{}: {{ reason: {:?}, reconnect: {} }}",
            code.code(),
            code.reason(),
            code.should_reconnect()
        );
        assert!(text.contains(&entry), "missing {entry}");
    }
}
