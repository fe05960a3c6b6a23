use super::*;

fn put(store: &ContentStore, bytes: &[u8]) -> ContentId {
    let cid = ContentId::of(bytes);
    store.put(cid, bytes).expect("stored");
    cid
}

#[test]
fn content_is_kept_by_id_within_the_bound_least_recently_used_first() {
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("not-content.txt"), b"keep").expect("write");
    std::fs::write(folder.path().join("x.partial"), b"half").expect("write");
    let store = ContentStore::open(folder.path(), 100).expect("opens");
    assert!(!folder.path().join("x.partial").exists());
    let a = put(&store, &[1; 40]);
    assert!(!store.put(a, &[1; 40]).expect("again"), "held already");
    let b = put(&store, &[2; 40]);
    // `a` is used again, so `b` is the least recently used.
    assert!(store.read(&a).is_some());
    let c = put(&store, &[3; 40]);
    assert_eq!(store.read(&a).as_deref(), Some(&[1u8; 40][..]));
    assert!(store.read(&b).is_none());
    assert!(!store.path_exists(&b));
    assert_eq!(store.read(&c).as_deref(), Some(&[3u8; 40][..]));
    assert_eq!((store.bytes(), store.len()), (80, 2));
    assert_eq!(store.entries(), vec![(a, 40), (c, 40)]);
    assert!(matches!(
        store.put(ContentId::of(&[4; 101]), &[4; 101]),
        Err(StoreError::TooLarge { .. })
    ));

    // A damaged file is not served, and is forgotten.
    std::fs::write(store.file(&c), b"not c").expect("damage");
    assert!(store.read(&c).is_none());
    assert_eq!(store.len(), 1);

    // A new run keeps what is there, within its own bound, and leaves
    // other files alone.
    drop(store);
    let store = ContentStore::open(folder.path(), 100).expect("reopens");
    assert_eq!(store.read(&a).as_deref(), Some(&[1u8; 40][..]));
    store.shrink_to(0);
    assert!(store.is_empty() && store.read(&a).is_none());
    put(&store, &[5; 30]);
    drop(store);
    let smaller = ContentStore::open(folder.path(), 10).expect("reopens smaller");
    assert!(smaller.is_empty());
    assert!(folder.path().join("not-content.txt").exists());
}

#[test]
fn content_written_as_it_arrives_joins_the_store_only_when_finished() {
    let folder = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ContentStore::open(folder.path(), 1000).expect("opens"));
    let bytes = [5u8; 600];
    let cid = ContentId::of(&bytes);

    let mut dropped = store.writer(600).expect("room");
    dropped.write_all(&bytes[..100]).expect("write");
    assert_eq!(store.bytes(), 600, "the room is held while it is written");
    drop(dropped);
    assert_eq!((store.bytes(), store.len()), (0, 0));
    let files = std::fs::read_dir(folder.path())
        .expect("dir")
        .filter(|entry| entry.as_ref().expect("entry").path().is_file())
        .count();
    assert_eq!(files, 0, "nothing left behind");

    let mut writer = store.writer(600).expect("room");
    writer.write_all(&bytes).expect("write");
    assert_eq!(writer.finish(cid).expect("finished"), 600);
    assert_eq!(store.read(&cid).as_deref(), Some(&bytes[..]));
    assert_eq!((store.bytes(), store.len()), (600, 1));
    assert!(matches!(
        store.writer(1001),
        Err(StoreError::TooLarge { .. })
    ));
}

#[test]
fn an_unfinished_write_is_resumed_from_its_whole_groups_after_a_restart() {
    let folder = tempfile::tempdir().expect("tempdir");
    let bytes: Vec<u8> = (0..5 * GROUP_BYTES + 100)
        .map(|i| (i % 239) as u8)
        .collect();
    let cid = ContentId::of(&bytes);
    let len = bytes.len() as u64;
    {
        let store = Arc::new(ContentStore::open(folder.path(), 1 << 20).expect("opens"));
        let (mut writer, resumed) = store.resume_writer(cid, len).expect("room");
        assert_eq!(resumed, 0);
        // Two groups and part of a third, then the process stops.
        writer
            .write_all(&bytes[..2 * GROUP_BYTES + 999])
            .expect("write");
        drop(writer);
        assert_eq!((store.bytes(), store.len()), (0, 0), "room given back");
    }
    let store = Arc::new(ContentStore::open(folder.path(), 1 << 20).expect("reopens"));
    let (mut writer, resumed) = store.resume_writer(cid, len).expect("room");
    assert_eq!(resumed, 2 * GROUP_BYTES as u64, "whole groups only");
    writer.write_all(&bytes[2 * GROUP_BYTES..]).expect("write");
    let path = writer.path().expect("flushed").to_path_buf();
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    assert_eq!(writer.finish(cid).expect("finished"), len);
    assert_eq!(store.read(&cid).as_deref(), Some(&bytes[..]));

    // A writer discarded leaves nothing to resume.
    let other = ContentId::of(b"other");
    let (mut writer, _) = store
        .resume_writer(other, 3 * GROUP_BYTES as u64)
        .expect("room");
    writer.write_all(&bytes[..GROUP_BYTES]).expect("write");
    writer.discard();
    let (_, resumed) = store
        .resume_writer(other, 3 * GROUP_BYTES as u64)
        .expect("room");
    assert_eq!(resumed, 0);
}

#[test]
fn a_file_put_is_served_in_checked_chunks_and_a_damaged_one_is_not() {
    let folder = tempfile::tempdir().expect("tempdir");
    let store =
        Arc::new(ContentStore::open(&folder.path().join("store"), 64 << 20).expect("opens"));
    let bytes: Vec<u8> = (0..(3 << 20) + 12_345).map(|i| (i % 241) as u8).collect();
    let source = folder.path().join("input.bin");
    std::fs::write(&source, &bytes).expect("write");
    let (cid, len, new) = store.put_file(&source).expect("put");
    assert_eq!(
        (cid, len, new),
        (ContentId::of(&bytes), bytes.len() as u64, true)
    );
    assert_eq!(store.put_file(&source).expect("again"), (cid, len, false));
    assert_eq!(store.bytes(), len, "held once");

    let mut fetch = crate::ContentFetch::new(cid, u64::MAX);
    let holder = idlegrid_types::Keypair::from_seed([9; 32]).account_id();
    let got = loop {
        let response = match fetch.request() {
            crate::Request::ContentTree { cid, from } => store.tree_response(&cid, from),
            crate::Request::Content { cid, offset } => store.chunk_response(&cid, offset),
            other => panic!("asked {other:?}"),
        };
        if let Some(got) = fetch.answer(&holder, response).expect("checks") {
            break got;
        }
    };
    assert_eq!(got, bytes);

    // One byte changed on disk after the tree was made: that chunk is
    // not served, and the content is forgotten.
    let mut damaged = bytes.clone();
    damaged[(2 << 20) + 5] ^= 1;
    std::fs::write(store.file(&cid), &damaged).expect("damage");
    assert!(matches!(
        store.chunk_response(&cid, 0),
        Response::Content { .. }
    ));
    assert!(matches!(
        store.chunk_response(&cid, 2 << 20),
        Response::Refused { .. }
    ));
    assert!(!store.contains(&cid));
}

#[test]
fn pinned_content_survives_pressure_until_unpinned() {
    let folder = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ContentStore::open(folder.path(), 100).expect("opens"));
    let output = ContentId::of(&[1; 40]);
    assert!(store.put_pinned(output, &[1; 40]).expect("stored"));
    // Pinned for a second task that gave the same output.
    assert!(!store.put_pinned(output, &[1; 40]).expect("held"));
    assert_eq!(store.pinned_bytes(), 40);
    let module = put(&store, &[2; 30]);
    assert!(store.pin(&module));
    assert!(!store.pin(&ContentId::of(b"never stored")), "not held");
    assert_eq!(store.pinned_bytes(), 70);
    store.unpin(&module);

    // `output` is the least recently used, and it stays.
    for fill in 3..10u8 {
        put(&store, &[fill; 30]);
        assert!(store.read(&output).is_some(), "pinned content was evicted");
    }
    assert!(!store.contains(&module), "unpinned content is evicted");
    let mut writer = store.writer(60).expect("room beside the pinned");
    writer.write_all(&[10; 60]).expect("write");
    writer.finish(ContentId::of(&[10; 60])).expect("finished");
    assert!(store.bytes() <= 100 && store.contains(&output));
    store.shrink_to(0);
    assert_eq!(store.entries(), vec![(output, 40)]);

    // Pinned twice, it takes two unpins to become evictable.
    store.unpin(&output);
    store.shrink_to(0);
    assert!(store.contains(&output));
    store.unpin(&output);
    store.unpin(&output);
    assert_eq!(store.pinned_bytes(), 0);
    put(&store, &[11; 70]);
    assert!(!store.contains(&output), "evictable once unpinned");
}

#[test]
fn content_that_fits_only_by_evicting_pinned_content_is_refused_and_evicts_nothing() {
    let folder = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ContentStore::open(folder.path(), 100).expect("opens"));
    let pinned = ContentId::of(&[1; 60]);
    store.put_pinned(pinned, &[1; 60]).expect("stored");
    let cached = put(&store, &[2; 30]);

    let refused = store.put_pinned(ContentId::of(&[3; 50]), &[3; 50]);
    let Err(error @ StoreError::TooLarge { .. }) = refused else {
        panic!("stored past pinned content: {refused:?}");
    };
    assert_eq!(
        error.to_string(),
        "50 bytes is more than this store keeps (100, 60 of them pinned)"
    );
    assert!(matches!(
        store.put(ContentId::of(&[4; 41]), &[4; 41]),
        Err(StoreError::TooLarge { pinned: 60, .. })
    ));
    assert!(matches!(store.writer(41), Err(StoreError::TooLarge { .. })));
    assert!(matches!(
        store.resume_writer(ContentId::of(&[5; 41]), 41),
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(
        (store.bytes(), store.len()),
        (90, 2),
        "nothing was evicted or left held for the refused content"
    );
    assert!(store.contains(&cached));

    // What fits beside the pinned content evicts only what is not.
    let fits = put(&store, &[6; 40]);
    assert!(store.contains(&pinned) && store.contains(&fits));
    assert!(!store.contains(&cached));

    // Pinned content damaged on disk is forgotten, pin and all.
    std::fs::write(store.file(&pinned), b"not it").expect("damage");
    assert!(store.read(&pinned).is_none());
    assert_eq!(store.pinned_bytes(), 0);
    store.unpin(&pinned);
    assert_eq!(store.pinned_bytes(), 0);
}

impl ContentStore {
    fn path_exists(&self, cid: &ContentId) -> bool {
        self.file(cid).exists()
    }
}
