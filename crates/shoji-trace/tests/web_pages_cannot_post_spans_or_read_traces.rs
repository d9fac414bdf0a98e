//! Issue 10 (item 9): a web page must neither write spans (a cross-origin POST needs no
//! preflight for text/plain or no Content-Type at all) nor read traces through DNS rebinding
//! (its own host name resolved to 127.0.0.1: the request then names that host in `Host`).

use crate::common;

use prost::Message;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

fn one_span_protobuf() -> Vec<u8> {
    common::request(
        "web",
        vec![common::span(7, 1, None, "posted", 1_000, 2_000)],
    )
    .encode_to_vec()
}

#[test]
fn otlp_http_refuses_bodies_without_a_known_content_type() {
    let srv = common::TestServer::start();
    let no_type = client()
        .post(srv.http_url())
        .body(one_span_protobuf())
        .send()
        .expect("POST");
    assert_eq!(no_type.status(), 415, "no Content-Type is not protobuf");
    let msg = no_type.text().expect("body");
    assert!(msg.contains("application/x-protobuf"), "{msg}");
    for t in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = client()
            .post(srv.http_url())
            .header("content-type", t)
            .body(one_span_protobuf())
            .send()
            .expect("POST");
        assert_eq!(r.status(), 415, "{t}");
    }
    assert_eq!(srv.store.totals().expect("totals").0, 0, "nothing stored");
    // Parameters are allowed, and the media type is case-insensitive.
    let r = client()
        .post(srv.http_url())
        .header("content-type", "Application/X-Protobuf; charset=binary")
        .body(one_span_protobuf())
        .send()
        .expect("POST");
    assert_eq!(r.status(), 200);
    assert_eq!(srv.store.totals().expect("totals").0, 1);
}

#[test]
fn requests_naming_a_foreign_host_are_refused_on_every_http_port() {
    let srv = common::TestServer::start();
    let api = format!("{}/api/services", srv.query_url());
    let viewer = format!("{}/", srv.query_url());
    for url in [&api, &viewer] {
        let r = client()
            .get(url.as_str())
            .header("host", "rebind.attacker.example:16686")
            .send()
            .expect("GET");
        assert_eq!(r.status(), 403, "{url}");
        assert!(r.text().expect("body").contains("--allow-host"));
    }
    let r = client()
        .post(srv.http_url())
        .header("host", "rebind.attacker.example")
        .header("content-type", "application/x-protobuf")
        .body(one_span_protobuf())
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403);
    assert_eq!(srv.store.totals().expect("totals").0, 0);
    // The names this server is reached by work.
    for host in ["localhost:16686", "127.0.0.1", "[::1]:1"] {
        let r = client()
            .get(api.as_str())
            .header("host", host)
            .send()
            .expect("GET");
        assert_eq!(r.status(), 200, "{host}");
    }
}

#[test]
fn allowed_host_names_can_be_added() {
    let srv = common::TestServer::start_with(|c| c.allowed_hosts = vec!["traces.lan".into()]);
    let r = client()
        .get(format!("{}/api/services", srv.query_url()))
        .header("host", "traces.lan:16686")
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
}
