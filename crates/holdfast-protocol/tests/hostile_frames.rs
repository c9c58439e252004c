//! Whatever a client sends, parsing answers with a frame or a precise error: it never panics,
//! and an accepted frame serialises back to something that parses to the same frame.
#![allow(clippy::unwrap_used)]

use holdfast_protocol::{parse_client_frame, ClientFrame, ErrorCode};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("room".to_owned()),
                    Just("id".to_owned()),
                    Just("data".to_owned()),
                    Just("token".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn frame_type() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(ClientFrame::TYPES.to_vec()).prop_map(str::to_owned),
        "[a-z_]{0,20}",
    ]
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = parse_client_frame(&text);
    }

    #[test]
    fn arbitrary_objects_parse_or_get_a_precise_code(
        ty in frame_type(),
        mut body in json_value(),
    ) {
        if let serde_json::Value::Object(m) = &mut body {
            m.insert("type".into(), ty.clone().into());
        }
        let text = body.to_string();
        match parse_client_frame(&text) {
            Ok(frame) => {
                let again = serde_json::to_string(&frame).unwrap();
                prop_assert_eq!(parse_client_frame(&again).unwrap(), frame);
            }
            Err(e) => prop_assert!(matches!(
                e.code,
                ErrorCode::BadJson | ErrorCode::InvalidFrame | ErrorCode::UnknownType
            )),
        }
    }
}
