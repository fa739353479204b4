//! Read buffers aligned to a cache line, and the reads and file hash that use them.
//!
//! The kernel copies file data out of the page cache several times faster into a buffer
//! whose start is 64-byte aligned than into one at the 16-byte alignment `malloc` gives a
//! large `Vec` (2.09 GB read in 1 MiB reads on this 2-core machine: 0.37 s aligned, 1.37 s
//! at an offset of 16; `copy_to_iter` was two thirds of a batch plan's profile).

use bytes::Bytes;

/// The alignment of [`AlignedBuf`]'s start.
const ALIGN: usize = 64;

/// `len` zeroed bytes starting at a 64-byte boundary.
#[derive(Debug)]
pub struct AlignedBuf {
    vec: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        let vec = vec![0u8; len + ALIGN - 1];
        let start = vec.as_ptr().align_offset(ALIGN).min(ALIGN - 1);
        AlignedBuf { vec, start, len }
    }

    /// The bytes, to read into.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..self.start + self.len]
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }
}

/// Reads exactly `len` bytes of `reader` into a new buffer starting on a cache line,
/// without zeroing it first (a file reads straight into the spare capacity).
pub fn read_aligned(reader: &mut impl std::io::Read, len: usize) -> std::io::Result<Bytes> {
    use std::io::Read;
    let mut vec: Vec<u8> = Vec::with_capacity(len + ALIGN - 1);
    let pad = vec.as_ptr().align_offset(ALIGN).min(ALIGN - 1);
    vec.resize(pad, 0);
    reader.take(len as u64).read_to_end(&mut vec)?;
    if vec.len() - pad != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} bytes read of {len}", vec.len() - pad),
        ));
    }
    Ok(Bytes::from(vec).slice(pad..))
}

/// The size and SHA-256 digest of the file at `path`, read in aligned 1 MiB pieces.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<(u64, [u8; 32])> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = AlignedBuf::new(1 << 20);
    let mut size = 0u64;
    loop {
        let n = file.read(buf.as_mut_slice())?;
        if n == 0 {
            return Ok((size, hasher.finalize().into()));
        }
        size += n as u64;
        hasher.update(&buf.as_slice()[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_cache_line() {
        for len in [0, 1, 100, 1 << 16, 1 << 20] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.as_mut_slice().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.as_slice().len(), len);
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
    }

    #[test]
    fn reads_exactly_what_was_asked() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for len in [0, 1, 63, 64, 65, 4096, 100_000] {
            let got = read_aligned(&mut &data[..], len).unwrap();
            assert_eq!(&got[..], &data[..len]);
            assert_eq!(got.as_ptr() as usize % ALIGN, 0, "{len}");
        }
        let short = read_aligned(&mut &data[..10], 11).unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn hashes_a_file_as_sha256_of_its_bytes() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let (size, digest) = sha256_file(&path).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(digest[..], Sha256::digest(&data)[..]);
    }
}
