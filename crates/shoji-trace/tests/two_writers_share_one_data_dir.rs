//! A server process and another process (here: this test, as `shoji run` would) writing one
//! data directory at the same time: nothing lost, nothing duplicated, database intact.

use crate::common;

use prost::Message;
use shoji_trace::store::Store;

#[test]
fn two_writers_share_one_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = common::ChildServer::spawn(dir.path());
    let url = format!("http://{}/v1/traces", child.http);
    let direct = std::thread::spawn({
        let path = dir.path().to_path_buf();
        move || {
            let store = Store::open(&path).expect("open");
            for i in 0..50u64 {
                let s = store
                    .ingest(&common::batch([0xaa; 16], 1 + i * 200, 200))
                    .expect("direct ingest");
                assert_eq!(s.stored, 200);
            }
        }
    });
    let client = reqwest::blocking::Client::new();
    for i in 0..50u64 {
        let body = common::batch([0xbb; 16], 1 + i * 200, 200).encode_to_vec();
        let resp = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .expect("POST");
        assert_eq!(resp.status(), 200);
    }
    direct.join().expect("direct writer");
    drop(child);
    let store = Store::open(dir.path()).expect("open");
    for id in [[0xaa; 16], [0xbb; 16]] {
        assert_eq!(
            store.trace(&id).expect("read").expect("trace").spans.len(),
            10_000
        );
        assert_eq!(
            store
                .summary(&id)
                .expect("read")
                .expect("summary")
                .span_count,
            10_000
        );
    }
    let conn = rusqlite::Connection::open(store.path()).expect("open sqlite");
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(ok, "ok");
}
