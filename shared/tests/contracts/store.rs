//! The object-store contract, run against every adapter: memory, file, and S3 on the
//! emulator (moto under `make test`).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use crate::common;

use std::sync::Arc;

use bytes::Bytes;
use lambdaml::store::{
    FileStore, MemoryStore, ObjectKey, ObjectStore, ObjectStoreExt, S3Store, StoreError,
};

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

async fn round_trip(store: &dyn ObjectStore) {
    let k = key("a/b/c.txt");
    assert!(store.head(&k).await.unwrap().is_none());
    assert!(matches!(store.get(&k).await, Err(StoreError::NotFound(_))));
    let meta = store.put(&k, Bytes::from_static(b"hello")).await.unwrap();
    let got = store.get(&k).await.unwrap();
    assert_eq!(&got.bytes[..], b"hello");
    assert_eq!(got.etag, meta.etag, "put and get agree on the etag");
    let head = store.head(&k).await.unwrap().unwrap();
    assert_eq!(head.size, 5);
    assert_eq!(head.etag, meta.etag);
    let changed = store.put(&k, Bytes::from_static(b"world")).await.unwrap();
    assert_ne!(changed.etag, meta.etag, "new contents, new etag");
    assert_eq!(&store.get(&k).await.unwrap().bytes[..], b"world");
}

async fn conditional_writes(store: &dyn ObjectStore) {
    let k = key("registry/model.json");
    store
        .put_if_absent(&k, Bytes::from_static(b"v1"))
        .await
        .unwrap();
    let second = store.put_if_absent(&k, Bytes::from_static(b"v2")).await;
    assert!(
        matches!(second, Err(StoreError::AlreadyExists(_))),
        "{second:?}"
    );
    let current = store.get(&k).await.unwrap();
    assert_eq!(&current.bytes[..], b"v1", "a refused write changes nothing");

    let next = store
        .put_if_match(&k, Bytes::from_static(b"v2"), &current.etag)
        .await
        .unwrap();
    let stale = store
        .put_if_match(&k, Bytes::from_static(b"v3"), &current.etag)
        .await;
    assert!(
        matches!(stale, Err(StoreError::PreconditionFailed { .. })),
        "{stale:?}"
    );
    assert_eq!(&store.get(&k).await.unwrap().bytes[..], b"v2");
    store
        .put_if_match(&k, Bytes::from_static(b"v3"), &next.etag)
        .await
        .unwrap();
    let missing = store
        .put_if_match(
            &key("registry/none.json"),
            Bytes::from_static(b"x"),
            &next.etag,
        )
        .await;
    assert!(
        matches!(
            missing,
            Err(StoreError::NotFound(_) | StoreError::PreconditionFailed { .. })
        ),
        "{missing:?}"
    );
}

async fn immutable_writes(store: &dyn ObjectStore) {
    let k = key("models/m/1/manifest.json");
    assert!(
        store
            .put_immutable(&k, Bytes::from_static(b"same"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_immutable(&k, Bytes::from_static(b"same"))
            .await
            .unwrap(),
        "a rewrite of the same bytes writes nothing"
    );
    assert!(
        store
            .put_immutable(&k, Bytes::from_static(b"different"))
            .await
            .is_err()
    );
}

async fn listing(store: &dyn ObjectStore) {
    for i in 0..25 {
        store
            .put(
                &key(&format!("list/ab/{i:03}.json")),
                Bytes::from(format!("{i}")),
            )
            .await
            .unwrap();
    }
    store
        .put(&key("list/other/x"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    store
        .put(&key("listing/y"), Bytes::from_static(b"y"))
        .await
        .unwrap();
    let mut token = None;
    let mut keys = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list_page("list/ab/", token, 10).await.unwrap();
        pages += 1;
        assert!(page.objects.len() <= 10);
        keys.extend(page.objects.into_iter().map(|o| o.key.to_string()));
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("list/ab/{i:03}.json")).collect();
    assert_eq!(keys, expected, "every key once, in order");
    // A prefix need not end at a separator.
    let partial = store.list_all("list/a").await.unwrap();
    assert_eq!(partial.len(), 25);
    let all = store.list_all("list").await.unwrap();
    assert_eq!(all.len(), 27);
    assert!(store.list_all("nothing/").await.unwrap().is_empty());
}

async fn streaming(store: &dyn ObjectStore) {
    use futures::StreamExt;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let k = key("raw/big/file.bin");
    store.put(&k, Bytes::from(big.clone())).await.unwrap();
    let mut stream = store.get_stream(&k).await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, big);
    assert!(matches!(
        store.get_stream(&key("raw/none")).await,
        Err(StoreError::NotFound(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upload.bin");
    std::fs::write(&path, &big).unwrap();
    let meta = store
        .put_file(&key("raw/big/uploaded.bin"), &path)
        .await
        .unwrap();
    assert_eq!(meta.size, big.len() as u64);
    assert_eq!(
        store
            .get(&key("raw/big/uploaded.bin"))
            .await
            .unwrap()
            .bytes
            .len(),
        big.len()
    );
}

/// Byte ranges: clamped to the object, only while its etag is the one given (so a reader
/// of part of a large object never mixes two versions of it), `NotFound` when it is gone.
async fn ranges(store: &dyn ObjectStore) {
    let k = key("batch/m/j/input/data.csv");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let meta = store.put(&k, Bytes::from(bytes.clone())).await.unwrap();
    let etag = store.head(&k).await.unwrap().unwrap().etag;
    assert_eq!(meta.etag, etag);
    let got = store.get_range(&k, 10..20, Some(&etag)).await.unwrap();
    assert_eq!(&got[..], &bytes[10..20]);
    let got = store.get_range(&k, 99_990..200_000, None).await.unwrap();
    assert_eq!(&got[..], &bytes[99_990..]);
    assert!(store.get_range(&k, 5..5, None).await.unwrap().is_empty());
    assert!(
        store
            .get_range(&k, 100_000..100_010, None)
            .await
            .unwrap()
            .is_empty()
    );
    // Another version: the old etag no longer reads.
    store
        .put(&k, Bytes::from_static(b"replaced"))
        .await
        .unwrap();
    assert!(matches!(
        store.get_range(&k, 0..4, Some(&etag)).await,
        Err(StoreError::PreconditionFailed { .. })
    ));
    let now = store.head(&k).await.unwrap().unwrap().etag;
    assert_eq!(
        &store.get_range(&k, 0..4, Some(&now)).await.unwrap()[..],
        b"repl"
    );
    assert!(matches!(
        store.get_range(&key("batch/none"), 0..4, None).await,
        Err(StoreError::NotFound(_))
    ));
}

/// A local snapshot, where an adapter gives one, holds the bytes of when it was taken
/// whatever is written to the key afterwards, and goes when dropped; a missing object is
/// `NotFound` (or no snapshot, from an adapter that never gives one).
async fn snapshots(store: &dyn ObjectStore) -> bool {
    let k = key("raw/snap/file.csv");
    store
        .put(&k, Bytes::from_static(b"a,b\n1,2\n"))
        .await
        .unwrap();
    let Some(snapshot) = store.local_snapshot(&k).await.unwrap() else {
        assert!(matches!(
            store.local_snapshot(&key("raw/snap/none.csv")).await,
            Ok(None) | Err(StoreError::NotFound(_))
        ));
        return false;
    };
    store
        .put(&k, Bytes::from_static(b"a,b\n3,4\n"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&snapshot).unwrap(), b"a,b\n1,2\n");
    assert_eq!(&store.get(&k).await.unwrap().bytes[..], b"a,b\n3,4\n");
    let path = snapshot.to_path_buf();
    drop(snapshot);
    assert!(!path.exists(), "a dropped snapshot is removed");
    assert!(matches!(
        store.local_snapshot(&key("raw/snap/none.csv")).await,
        Err(StoreError::NotFound(_))
    ));
    true
}

/// Compare-and-swap under contention: every increment lands exactly once.
async fn concurrent_cas(store: Arc<dyn ObjectStore>, writers: usize) {
    let k = key("cas/counter.json");
    store.put(&k, Bytes::from_static(b"0")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (store, k) = (store.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let current = store.get(&k).await.unwrap();
                let n: u64 = std::str::from_utf8(&current.bytes)
                    .unwrap()
                    .parse()
                    .unwrap();
                match store
                    .put_if_match(&k, Bytes::from((n + 1).to_string()), &current.etag)
                    .await
                {
                    Ok(_) => break,
                    Err(StoreError::PreconditionFailed { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let done = store.get(&k).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&done.bytes).unwrap(),
        writers.to_string()
    );
}

/// A local file adopted (the file store links it; others upload it): the object has the
/// file's bytes, and head, get and ranges agree on the etag the adoption answered, small
/// and large (past the size whose etag the file store remembers).
async fn adopting(store: &dyn ObjectStore) {
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("small.csv", 1_000u32), ("large.csv", 9 << 20)] {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let k = key(&format!("batch/m/j/input/{name}"));
        let meta = store.adopt_file(&k, &path).await.unwrap();
        assert_eq!(meta.size, u64::from(len));
        assert_eq!(store.head(&k).await.unwrap().unwrap().etag, meta.etag);
        let got = store.get(&k).await.unwrap();
        assert_eq!(got.etag, meta.etag, "{name}");
        assert_eq!(&got.bytes[..], &bytes[..]);
        let range = store.get_range(&k, 3..9, Some(&meta.etag)).await.unwrap();
        assert_eq!(&range[..], &bytes[3..9]);
    }
}

async fn contract(store: Arc<dyn ObjectStore>) {
    round_trip(store.as_ref()).await;
    adopting(store.as_ref()).await;
    conditional_writes(store.as_ref()).await;
    immutable_writes(store.as_ref()).await;
    listing(store.as_ref()).await;
    streaming(store.as_ref()).await;
    ranges(store.as_ref()).await;
    snapshots(store.as_ref()).await;
    concurrent_cas(store, 20).await;
}

#[tokio::test]
async fn memory_store_meets_the_contract() {
    contract(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(Arc::new(FileStore::open(dir.path()).unwrap())).await;
    // The file store is the adapter that does give snapshots (ingest reads them in place).
    let store = FileStore::open(dir.path().join("again")).unwrap();
    assert!(snapshots(&store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_cas_holds_across_independent_openers() {
    // Each writer opens its own FileStore (its own lock file handle), as separate processes
    // would: the advisory lock still serializes them.
    let dir = tempfile::tempdir().unwrap();
    let k = key("cas/shared.json");
    FileStore::open(dir.path())
        .unwrap()
        .put(&k, Bytes::from_static(b"0"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (root, k) = (dir.path().to_path_buf(), k.clone());
        tasks.push(tokio::spawn(async move {
            let store = FileStore::open(&root).unwrap();
            loop {
                let current = store.get(&k).await.unwrap();
                let n: u64 = std::str::from_utf8(&current.bytes)
                    .unwrap()
                    .parse()
                    .unwrap();
                match store
                    .put_if_match(&k, Bytes::from((n + 1).to_string()), &current.etag)
                    .await
                {
                    Ok(_) => break,
                    Err(StoreError::PreconditionFailed { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(&store.get(&k).await.unwrap().bytes[..], b"50");
    // No temporary files are left behind.
    assert_eq!(
        std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
        0
    );
}

/// A large object's etag is hashed once, not once per process: the next opener reads it
/// from `.etags/` while the file is the same version, and hashes again once it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_remembers_large_etags_across_openers() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
    let source = dir.path().join("source.bin");
    std::fs::write(&source, &big).unwrap();
    let k = key("batch/m/j/input/big.csv");
    let put = FileStore::open(dir.path())
        .unwrap()
        .put_file(&k, &source)
        .await
        .unwrap();
    let remembered: Vec<_> = std::fs::read_dir(dir.path().join(".etags"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(remembered.len(), 1, "one object remembered");
    let other = FileStore::open(dir.path()).unwrap();
    assert_eq!(other.head(&k).await.unwrap().unwrap().etag, put.etag);
    // It is read, not recomputed: a remembered etag that names the same version is used.
    let text = std::fs::read_to_string(&remembered[0]).unwrap();
    let forged = text.replace(put.etag.as_str(), "\"forged\"");
    std::fs::write(&remembered[0], forged).unwrap();
    let third = FileStore::open(dir.path()).unwrap();
    assert_eq!(third.head(&k).await.unwrap().unwrap().etag, "\"forged\"");
    // The object changed in place (same size, new bytes): the memory is stale and ignored.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut changed = big.clone();
    changed[0] ^= 1;
    std::fs::write(dir.path().join(k.as_str()), &changed).unwrap();
    let fourth = FileStore::open(dir.path()).unwrap();
    let now = fourth.head(&k).await.unwrap().unwrap().etag;
    assert_ne!(now, put.etag);
    assert_ne!(now, "\"forged\"");
    let rewritten = FileStore::open(dir.path())
        .unwrap()
        .put(&key("again.bin"), Bytes::from(changed))
        .await
        .unwrap();
    assert_eq!(now, rewritten.etag, "the content's etag, as a put gives");
    // Listings do not show the memory.
    let all = fourth.list_all("").await.unwrap();
    assert!(
        all.iter().all(|o| !o.key.as_str().starts_with('.')),
        "{all:?}"
    );
}

/// An adopted file is linked, not copied: its etag holds while it is unchanged (head, get
/// and ranges agree), and a change in place is a new version that a reader holding the
/// old etag is refused. A small file gets its content's etag, as a put would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_adopts_files_without_copying() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path().join("store")).unwrap();
    let big: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 241) as u8).collect();
    let source = dir.path().join("input.csv");
    std::fs::write(&source, &big).unwrap();
    let k = key("batch/m/j/input/input.csv");
    let meta = store.adopt_file(&k, &source).await.unwrap();
    assert_eq!(meta.size, big.len() as u64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let stored = dir.path().join("store").join(k.as_str());
        assert_eq!(
            std::fs::metadata(&stored).unwrap().ino(),
            std::fs::metadata(&source).unwrap().ino(),
            "linked, not copied"
        );
    }
    let other = FileStore::open(dir.path().join("store")).unwrap();
    assert_eq!(other.head(&k).await.unwrap().unwrap().etag, meta.etag);
    let got = other.get(&k).await.unwrap();
    assert_eq!(got.etag, meta.etag);
    assert_eq!(&got.bytes[..], &big[..]);
    let range = other.get_range(&k, 5..10, Some(&meta.etag)).await.unwrap();
    assert_eq!(&range[..], &big[5..10]);
    // Changed in place: a new version.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut changed = big.clone();
    changed[7] ^= 1;
    std::fs::write(&source, &changed).unwrap();
    let third = FileStore::open(dir.path().join("store")).unwrap();
    assert!(matches!(
        third.get_range(&k, 5..10, Some(&meta.etag)).await,
        Err(StoreError::PreconditionFailed { .. })
    ));
    assert_ne!(third.head(&k).await.unwrap().unwrap().etag, meta.etag);
    // A small file: the content's etag.
    let small = dir.path().join("small.csv");
    std::fs::write(&small, b"a,b\n1,2\n").unwrap();
    let adopted = store
        .adopt_file(&key("s/adopted.csv"), &small)
        .await
        .unwrap();
    let put = store
        .put(&key("s/put.csv"), Bytes::from_static(b"a,b\n1,2\n"))
        .await
        .unwrap();
    assert_eq!(adopted.etag, put.etag);
}

#[tokio::test]
async fn file_store_refuses_reserved_and_escaping_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let err = store
        .put(&key(".queues/x"), Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidKey { .. }), "{err}");
    assert!(ObjectKey::new("../outside").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_meets_the_contract_on_the_emulator() {
    if common::emulator("s3_store_meets_the_contract_on_the_emulator").is_none() {
        return;
    }
    let bucket = common::unique("contract");
    let store = S3Store::from_env(&bucket, "some/prefix").await;
    store
        .client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    contract(store.clone()).await;
    // The prefix is invisible to callers.
    let listed = store.list_all("a/").await.unwrap();
    assert_eq!(listed[0].key.as_str(), "a/b/c.txt");
}

/// A console's folder marker (`specs/`) and a key with `//` written by another tool sit in
/// the bucket beside real objects: listings skip and count them instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_listings_skip_keys_lambdaml_cannot_use() {
    if common::emulator("s3_listings_skip_keys_lambdaml_cannot_use").is_none() {
        return;
    }
    let bucket = common::unique("oddkeys");
    let store = S3Store::from_env(&bucket, "").await;
    let client = store.client().clone();
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    for odd in ["specs/", "specs//double.toml"] {
        client
            .put_object()
            .bucket(&bucket)
            .key(odd)
            .body(Vec::new().into())
            .send()
            .await
            .unwrap();
    }
    store
        .put(&key("specs/real.toml"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let page = store.list_page("specs/", None, 100).await.unwrap();
    let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["specs/real.toml"]);
    assert_eq!(page.skipped, 2);
    let all = store.list_all("specs/").await.unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn file_store_listings_skip_files_lambdaml_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store
        .put(&key("specs/real.toml"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    // A file another program left with a name no key may have.
    std::fs::write(dir.path().join("specs/back\\slash.toml"), b"y").unwrap();
    let page = store.list_page("specs/", None, 100).await.unwrap();
    let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["specs/real.toml"]);
    assert_eq!(page.skipped, 1);
    assert_eq!(store.list_all("specs/").await.unwrap().len(), 1);
}
