use super::*;

fn split(text: &[u8], rows: u64, max_bytes: u64, chunk: usize) -> (String, Vec<CsvPart>) {
    let mut s = CsvSplitter::new(rows, max_bytes);
    let mut parts = Vec::new();
    for c in text.chunks(chunk.max(1)) {
        parts.extend(s.feed(c).unwrap());
    }
    let (header, rest) = s.finish().unwrap();
    parts.extend(rest);
    (header.unwrap(), parts)
}

/// Records (and their physical line, counted from the text) as the csv crate reads the
/// whole text.
fn records(text: &[u8]) -> Vec<(Vec<String>, u64)> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text);
    let mut lines = LineCounter::new(1);
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let line = lines.line_at(text, rec.position().unwrap().byte() as usize);
            (rec.iter().map(str::to_string).collect(), line)
        })
        .collect()
}

fn check(text: &[u8], rows: u64, max_bytes: u64) {
    let whole = records(text);
    for chunk in [1, 2, 3, 7, 64, 1 << 20] {
        let (header, parts) = split(text, rows, max_bytes, chunk);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(text);
        let expected: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        let got: Vec<String> = header.split(',').map(String::from).collect();
        assert_eq!(got, expected, "chunk {chunk}");
        let mut seen = Vec::new();
        let mut next_row = 0;
        for p in &parts {
            assert!(p.rows >= 1 && p.rows <= rows, "{p:?}");
            assert_eq!(p.first_row, next_row, "{p:?}");
            next_row += p.rows;
            let bytes = &text[p.start as usize..p.end as usize];
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(bytes);
            let mut n = 0;
            let mut lines = LineCounter::new(p.first_line);
            for rec in r.records() {
                let rec = rec.unwrap();
                let line = lines.line_at(bytes, rec.position().unwrap().byte() as usize);
                seen.push((rec.iter().map(str::to_string).collect::<Vec<_>>(), line));
                n += 1;
            }
            assert_eq!(n, p.rows, "{p:?} of chunk {chunk}");
        }
        assert_eq!(seen, whole, "chunk {chunk}");
        for w in parts.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
    }
}

#[test]
fn partitions_hold_whole_records_with_their_lines() {
    let text = b"a,b,c\n1,2,3\n4,\"x\ny\",6\n\n7,8,9\r\n\"q\"\"\n\",1,2\n10,11,12";
    for rows in 1..=5 {
        check(text, rows, u64::MAX);
    }
    check(text, 100, 8);
}

#[test]
fn blank_lines_and_a_bom_are_not_records() {
    let text = b"\n\xEF\xBB\xBFx,y\r\n\r\n1,2\r\n\r\n3,4\r\n";
    let (header, parts) = split(text, 1, u64::MAX, 5);
    assert_eq!(header, "x,y");
    // The physical lines, blank ones counted (the csv crate's own count skips them).
    assert_eq!(
        records(text).iter().map(|r| r.1).collect::<Vec<_>>(),
        [4, 6]
    );
    assert_eq!(parts.len(), 2);
    assert_eq!(parts.iter().map(|p| p.rows).sum::<u64>(), 2);
    assert_eq!(parts[0].first_line, 4);
    assert_eq!(parts[1].first_line, 6);
}

#[test]
fn generated_files_split_like_the_csv_reader_reads_them() {
    // A deterministic mix of plain, quoted, quoted-with-newline and empty fields.
    let mut text = String::from("id,name,v\n");
    let mut state = 7u64;
    for i in 0..500 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let name = match (state >> 33) % 5 {
            0 => "\"multi\nline\"".to_string(),
            1 => "\"has \"\"quotes\"\", and comma\"".to_string(),
            2 => String::new(),
            3 => "\"quoted\r\ncrlf\"".to_string(),
            _ => format!("n{i}"),
        };
        text.push_str(&format!("{i},{name},{}\n", state % 1000));
        if (state >> 40).is_multiple_of(13) {
            text.push('\n');
        }
    }
    for rows in [1, 3, 64, 1000] {
        check(text.as_bytes(), rows, u64::MAX);
    }
    check(text.as_bytes(), 1000, 200);
}

#[test]
fn empty_and_headerless_streams_are_named() {
    let s = CsvSplitter::new(10, 100);
    assert_eq!(s.finish().unwrap_err(), SplitError::Empty);
    let mut s = CsvSplitter::new(10, 100);
    s.feed(b"\n\r\n").unwrap();
    assert_eq!(s.finish().unwrap_err(), SplitError::Empty);
    let mut s = CsvSplitter::new(10, 100);
    let long = vec![b'a'; MAX_HEADER_BYTES + 10];
    assert_eq!(s.feed(&long).unwrap_err(), SplitError::HeaderTooLong);
    // A header alone: no partitions.
    let (h, parts) = split(b"a,b", 10, 100, 1);
    assert_eq!(h, "a,b");
    assert!(parts.is_empty());
}

#[test]
fn formats_and_job_names() {
    assert_eq!(InputFormat::of("x.CSV"), Some(InputFormat::Csv));
    assert_eq!(InputFormat::of("x.csv.gz"), Some(InputFormat::CsvGzip));
    assert_eq!(InputFormat::of("x.parquet"), Some(InputFormat::Parquet));
    assert_eq!(InputFormat::of("x.json"), None);
    assert!(valid_job_name(&new_job_name()));
    assert!(!valid_job_name("../x"));
    assert!(!valid_job_name(".hidden"));
    assert!(!valid_job_name(""));
    assert!(!valid_job_name("a/b"));
}

#[test]
fn long_unquoted_runs_are_counted_as_the_reader_reads_them() {
    // 12,000 unquoted records (several counting blocks), a few blank lines, CRLF ends in
    // one stretch, one quoted field with a line feed in the middle.
    let mut text = String::from("id,a,b\n");
    for i in 0..12_000u64 {
        let end = if (3_000..3_200).contains(&i) {
            "\r\n"
        } else {
            "\n"
        };
        if i == 6_000 {
            text.push_str(&format!("{i},\"x\ny\",{}{end}", i * 7 % 1000));
        } else {
            text.push_str(&format!("{i},{},{}{end}", i * 13 % 997, i * 7 % 1000));
        }
        if matches!(i, 2_500 | 9_001 | 9_002 | 11_999) {
            text.push_str(if i == 9_001 { "\r\n" } else { "\n" });
        }
    }
    let text = text.as_bytes();
    for (rows, max_bytes) in [
        (100_000, u64::MAX),
        (4_096, u64::MAX),
        (5_000, 70_000),
        (777, 30_000),
    ] {
        check(text, rows, max_bytes);
    }
}
