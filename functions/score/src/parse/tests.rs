//! The parsers' building blocks, without a model: row limits, did-you-mean, CSV bodies, the
//! V2 binary extension and tensor shapes. (Whole requests against a model, and property
//! tests feeding arbitrary bytes, are in tests/e2e/score.rs.)

use axum::http::StatusCode;
use lambdaml::features::RawValue;
use serde_json::json;

use super::csv::read_csv;
use super::v2::{DType, decode_binary, dtype, split_binary};
use super::{Limits, check_rows, closest};

const LIMITS: Limits = Limits { max_rows: 3 };

/// Everything an error says: its sentence and its field details.
fn text(e: &crate::error::ApiError) -> String {
    format!("{} {:?}", e.error, e.details)
}

#[test]
fn row_counts_outside_the_limits_are_refused_with_their_status() {
    assert!(check_rows(1, LIMITS).is_ok());
    assert!(check_rows(3, LIMITS).is_ok());
    let none = check_rows(0, LIMITS).unwrap_err();
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert!(text(&none).contains("no rows"), "{none:?}");
    let many = check_rows(4, LIMITS).unwrap_err();
    assert_eq!(many.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        text(&many).contains("4 rows is over this server's limit of 3"),
        "{many:?}"
    );
}

#[test]
fn did_you_mean_finds_typos_and_only_typos() {
    let known: Vec<String> = ["temperature", "humidity", "wind_speed"]
        .map(String::from)
        .to_vec();
    let guess = |name: &str| closest(name, known.iter());
    assert_eq!(guess("temprature"), Some("temperature"));
    assert_eq!(guess("Humidity"), Some("humidity"), "case does not count");
    assert_eq!(guess("windspeed"), Some("wind_speed"));
    assert_eq!(guess("colour"), None, "nothing close");
    assert_eq!(guess(&"x".repeat(300)), None, "long names cost no distance");
}

#[test]
fn csv_bodies_need_a_header_and_stay_within_the_row_limit() {
    let ok = read_csv(b"a,b\n1,2\n3,4\n", LIMITS).unwrap();
    assert_eq!(ok.header.iter().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(ok.records.len(), 2);
    let e = read_csv(b"", LIMITS).unwrap_err();
    assert!(text(&e).contains("no header line"), "{e:?}");
    let e = read_csv(b"a,b\n1,2,3\n", LIMITS).unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(text(&e).contains("malformed CSV at data row 0"), "{e:?}");
    let e = read_csv(b"a\n1\n2\n3\n4\n", LIMITS).unwrap_err();
    assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    let wide = format!("{}\n", vec!["c"; super::MAX_CSV_COLUMNS + 1].join(","));
    let e = read_csv(wide.as_bytes(), LIMITS).unwrap_err();
    assert!(text(&e).contains("columns; at most"), "{e:?}");
}

#[test]
fn the_binary_extension_splits_at_the_header_length() {
    let body = b"{\"inputs\":[]}\x01\x02";
    let (json_part, binary) = split_binary(body, Some("13")).unwrap();
    assert_eq!(json_part, b"{\"inputs\":[]}");
    assert_eq!(binary, [1, 2]);
    assert_eq!(split_binary(body, None).unwrap().1, b"");
    let e = split_binary(body, Some("99")).unwrap_err();
    assert!(text(&e).contains("longer than the body"), "{e:?}");
    let e = split_binary(body, Some("-1")).unwrap_err();
    assert!(text(&e).contains("not a byte count"), "{e:?}");
}

#[test]
fn binary_tensors_decode_little_endian_and_refuse_a_wrong_size() {
    let f32s: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let values = decode_binary("x", dtype("FP32").unwrap(), &f32s, 2).unwrap();
    assert_eq!(values, [RawValue::Number(1.5), RawValue::Number(-2.0)]);
    let i16s: Vec<u8> = [-3i16, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
    let values = decode_binary("x", dtype("INT16").unwrap(), &i16s, 2).unwrap();
    assert_eq!(values, [RawValue::Number(-3.0), RawValue::Number(7.0)]);
    let values = decode_binary("x", DType::Bool, &[0, 2], 2).unwrap();
    assert_eq!(values, [RawValue::Number(0.0), RawValue::Number(1.0)]);
    // A shape that claims more values than the bytes hold allocates nothing for them.
    let e = decode_binary("x", dtype("FP64").unwrap(), &f32s, usize::MAX / 8).unwrap_err();
    assert!(text(&e).contains("binary bytes for"), "{e:?}");
    assert!(
        dtype("FP16").is_none(),
        "unsupported types are refused by name"
    );
}

#[test]
fn tensor_shapes_have_one_or_two_integer_dimensions() {
    use super::v2::tensor_shape;
    assert_eq!(tensor_shape("x", Some(&json!([3]))).unwrap(), [3]);
    assert_eq!(tensor_shape("x", Some(&json!([3, 2]))).unwrap(), [3, 2]);
    for (shape, why) in [
        (json!([]), "1 or 2 dimensions"),
        (json!([1, 2, 3]), "1 or 2 dimensions"),
        (json!([-1]), "non-negative integers"),
        (json!([1.5]), "non-negative integers"),
        (json!("3"), "missing or not an array"),
    ] {
        let e = tensor_shape("x", Some(&shape)).unwrap_err();
        assert!(text(&e).contains(why), "{shape}: {e:?}");
    }
    let e = tensor_shape("x", None).unwrap_err();
    assert!(text(&e).contains("missing"), "{e:?}");
}
