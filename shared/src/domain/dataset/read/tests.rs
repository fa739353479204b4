//! Reading raw files: record limits, corrupt inputs, compression.

#![allow(clippy::unwrap_used)]
use super::*;
use proptest::prelude::Strategy;
use std::io::Write;

/// A record that never ends refuses the file with the line it started on, the reader
/// having held at most the limit of it; gzip-compressed (a 40 KB file that expands to
/// one endless 40 MiB line), the decompression limit refuses it as a bomb.
#[test]
fn a_record_that_never_ends_refuses_the_file_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("endless.csv");
    let gzip = dir.path().join("endless.csv.gz");
    let mut f = std::io::BufWriter::new(File::create(&plain).unwrap());
    let mut gz =
        flate2::write::GzEncoder::new(File::create(&gzip).unwrap(), flate2::Compression::best());
    for out in [&mut f as &mut dyn Write, &mut gz] {
        out.write_all(b"a,b\n1,2\n3,\"").unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..40 {
            out.write_all(&chunk).unwrap();
        }
    }
    drop(f);
    gz.finish().unwrap();
    assert!(std::fs::metadata(&gzip).unwrap().len() < 1 << 20);
    let mut rows = open_rows(&plain, Format::Csv, b',').unwrap();
    let mut record = ByteRecord::new();
    assert_eq!(rows.next_row(&mut record).unwrap(), Some(2));
    match rows.next_row(&mut record) {
        Err(DatasetError::RecordTooLong { line, limit }) => {
            assert_eq!((line, limit), (3, MAX_RECORD_BYTES));
        }
        other => panic!("{other:?}"),
    }
    assert!(record.as_slice().len() as u64 <= MAX_RECORD_BYTES);
    let mut rows = open_rows(&gzip, Format::CsvGzip, b',').unwrap();
    assert_eq!(rows.next_row(&mut record).unwrap(), Some(2));
    let err = rows.next_row(&mut record).unwrap_err();
    assert!(
        matches!(err, DatasetError::TooMuchDecompressed { .. }),
        "{err}"
    );
    assert!(record.as_slice().len() as u64 <= MAX_RECORD_BYTES);
}

/// A Parquet file whose column chunk starts at a negative offset (found by `make fuzz`:
/// the parquet crate asserts on it) is an error, not a panic.
#[test]
fn a_corrupt_parquet_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.parquet");
    std::fs::write(
        &path,
        include_bytes!("../testdata/negative-column-start.parquet"),
    )
    .unwrap();
    let result = std::panic::catch_unwind(|| {
        let mut record = ByteRecord::new();
        match open_rows(&path, Format::Parquet, b',') {
            Err(e) => Err(e),
            Ok(mut rows) => loop {
                match rows.next_row(&mut record) {
                    Ok(Some(_)) => {}
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            },
        }
    });
    let err = result.expect("no panic").unwrap_err();
    assert!(err.to_string().contains("corrupt file"), "{err}");
}

/// Reads every row of `data` with a record limit of `limit` bytes: (line, fields, cut).
fn read_all(data: &[u8], limit: u64) -> Vec<(u64, Vec<Vec<u8>>, bool)> {
    let mut rows = CsvRows::open_with(
        Box::new(std::io::Cursor::new(data.to_vec())),
        u64::MAX,
        b',',
        limit,
    )
    .unwrap();
    let mut record = ByteRecord::new();
    let mut out = Vec::new();
    while let Some(line) = rows.next_row(&mut record).unwrap() {
        out.push((
            line,
            record.iter().map(<[u8]>::to_vec).collect(),
            rows.cut(),
        ));
    }
    out
}

/// A record past the limit is cut, marked, and skipped to its end; the rows after it
/// read as before, with their own line numbers — whether it was cut inside quotes
/// (a closing quote is owed), on the quote of a `""`, or outside quotes.
#[test]
fn a_long_record_that_ends_is_one_cut_row_and_the_rest_read() {
    let data = b"a,b\n1,2\nxxxxxxxxxxxxxxxxxxxx,3\n4,\"quoted\nand long enough to cut\"\n5,\"ab\"\"\"\"cdefghijkl\"\n6,7\n";
    let rows = read_all(data, 10);
    let summary: Vec<(u64, bool)> = rows.iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(
        summary,
        [(2, false), (3, true), (4, true), (6, true), (7, false)],
        "{rows:?}"
    );
    assert_eq!(rows[0].1, [b"1".to_vec(), b"2".to_vec()]);
    assert_eq!(rows[1].1, [b"xxxxxxxxxx".to_vec()]);
    assert_eq!(rows[2].1, [b"4".to_vec(), b"quoted\n".to_vec()]);
    assert_eq!(rows[4].1, [b"6".to_vec(), b"7".to_vec()]);
}

/// One field of a CSV row: its raw text and what the csv reader reads from it.
fn field() -> impl Strategy<Value = (String, String)> {
    proptest::prop_oneof![
        // Unquoted; a quote inside is a literal (12" screens).
        "[a-z0-9][a-z0-9\" ]{0,5}".prop_map(|s| (s.clone(), s)),
        // Quoted, with delimiters, line breaks and doubled quotes inside.
        "[a-z,\"\n ]{0,6}".prop_map(|s| (format!("\"{}\"", s.replace('"', "\"\"")), s)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]

    /// Whatever the quoting and the limit, a row is cut exactly when its raw record is
    /// longer than the limit; every other row reads as the csv reader reads it without
    /// a guard, on its own line.
    #[test]
    fn rows_are_cut_exactly_when_longer_than_the_limit(
        rows in proptest::collection::vec(proptest::collection::vec(field(), 1..5), 1..30),
        crlf in proptest::bool::ANY,
        limit in 5u64..40,
    ) {
        let end = if crlf { "\r\n" } else { "\n" };
        let mut data = format!("a,b,c{end}");
        let mut expected = Vec::new();
        let mut line = 2u64;
        for row in &rows {
            let raw = row.iter().map(|f| f.0.as_str()).collect::<Vec<_>>().join(",");
            let fields: Vec<Vec<u8>> = row.iter().map(|f| f.1.as_bytes().to_vec()).collect();
            let blank = fields.len() == 1 && fields[0].is_empty();
            if !blank || raw.len() as u64 > limit {
                expected.push((line, fields, raw.len() as u64 > limit));
            }
            line += 1 + raw.matches('\n').count() as u64;
            data.push_str(&raw);
            data.push_str(end);
        }
        let got = read_all(data.as_bytes(), limit);
        proptest::prop_assert_eq!(got.len(), expected.len(), "{:?}", data);
        for (g, e) in got.iter().zip(&expected) {
            proptest::prop_assert_eq!(g.0, e.0, "line, in {:?}", data);
            proptest::prop_assert_eq!(g.2, e.2, "cut, in {:?}", data);
            if !e.2 {
                proptest::prop_assert_eq!(&g.1, &e.1, "fields, in {:?}", data);
            }
        }
    }
}

/// Long records below the limit still read; the count restarts at every record.
#[test]
fn many_records_add_up_past_the_record_limit_without_tripping_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let mut f = std::io::BufWriter::new(File::create(&path).unwrap());
    f.write_all(b"a,b\n").unwrap();
    let field = "y".repeat(60_000);
    for i in 0..400 {
        writeln!(f, "{i},{field}").unwrap();
    }
    drop(f);
    let mut rows = open_rows(&path, Format::Csv, b',').unwrap();
    let mut record = ByteRecord::new();
    let mut n = 0;
    while rows.next_row(&mut record).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 400);
}

/// A decompression past its limit (here 1 MiB) refuses the file as a likely bomb.
#[test]
fn a_decompression_past_the_limit_is_refused() {
    let mut data = b"a,b\n".to_vec();
    while data.len() < 3 << 20 {
        data.extend_from_slice(b"1,2\n");
    }
    let mut rows = CsvRows::open(Box::new(std::io::Cursor::new(data)), 1 << 20, b',').unwrap();
    let mut record = ByteRecord::new();
    let err = loop {
        match rows.next_row(&mut record) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("read past the limit"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            DatasetError::TooMuchDecompressed {
                limit: 1_048_576,
                ..
            }
        ),
        "{err}"
    );
}
