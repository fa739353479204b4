#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn header_names_are_read_as_csv_and_trimmed() {
    assert_eq!(
        read::header_names(" a ,\"b,c\",d").unwrap(),
        vec!["a".to_string(), "b,c".to_string(), "d".to_string()]
    );
    assert!(read::header_names("").is_err());
}

#[test]
fn outcomes_name_their_kind() {
    let o = BatchOutcome::Ignored {
        key: "batch/m/j/output/part-00000.parquet".into(),
    };
    let v = serde_json::to_value(&o).unwrap();
    assert_eq!(v["outcome"], "ignored");
}
