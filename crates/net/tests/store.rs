//! A content store tells its watcher what it holds and lets go of (a
//! provider announces what it holds to the network through it).

use std::sync::{Arc, Mutex};

use idlegrid_net::{ContentStore, StoreChange};
use idlegrid_types::ContentId;

#[test]
fn a_store_tells_its_watcher_what_it_holds_and_lets_go() {
    let folder = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ContentStore::open(folder.path(), 100).expect("opens"));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let told = Arc::clone(&heard);
    assert!(store.watch(move |change| told.lock().expect("lock").push(change)));
    assert!(!store.watch(|_| {}), "one watcher");
    let put = |bytes: &[u8]| {
        let cid = ContentId::of(bytes);
        store.put(cid, bytes).expect("stored");
        cid
    };
    let a = put(&[1; 40]);
    put(&[1; 40]);
    let b = put(&[2; 40]);
    // Written as it arrives: held once finished.
    let c_bytes = [3u8; 40];
    let c = ContentId::of(&c_bytes);
    let mut writer = store.writer(40).expect("room");
    std::io::Write::write_all(&mut writer, &c_bytes).expect("write");
    // Room for `c` was made by letting `a` go.
    writer.finish(c).expect("finished");
    // A damaged file is let go when read.
    std::fs::write(store.path(&b).expect("held"), b"not b").expect("damage");
    assert!(store.read(&b).is_none());
    store.shrink_to(0);
    assert_eq!(
        *heard.lock().expect("lock"),
        vec![
            StoreChange::Held(a),
            StoreChange::Held(b),
            StoreChange::Gone(a),
            StoreChange::Held(c),
            StoreChange::Gone(b),
            StoreChange::Gone(c),
        ]
    );
}
