//! The artifact proxy over raw HTTP: what a client library would never send (traversal in
//! every spelling, absolute paths, backslashes, NUL), missing artifacts, the listing shape,
//! size limits, multipart answers, unknown endpoints, auth, on a local destination and one
//! pass on S3 (moto, `scripts/s3-setup.sh`; fails loudly without it).

mod artifacts_common;

use artifacts_common::{raw, s3_destination, serve, Server};
use capstan_store::artifacts::ArtifactStore;
use serde_json::{json, Value};

const A: &str = "/api/2.0/mlflow-artifacts/artifacts";

fn body_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[track_caller]
fn assert_error(got: (u16, String), status: u16, code: &str, mentions: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "{body}");
    let v = body_json(&body);
    assert_eq!(v["error_code"], code, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains(mentions), "message does not mention {mentions:?}: {message}");
}

/// PUT, GET, list, overwrite, DELETE of one file and a folder.
async fn basic_round_trip(server: &Server) {
    let addr = server.addr;
    let (s, body) = raw(addr, "PUT", &format!("{A}/1/r1/artifacts/dir/a.txt"), &[], b"alpha").await;
    assert_eq!((s, body_json(&body)), (200, json!({})));
    raw(addr, "PUT", &format!("{A}/1/r1/artifacts/dir/sub/b.bin"), &[], &[0u8, 1, 2, 255]).await;
    raw(addr, "PUT", &format!("{A}/1/r1/artifacts/top.json"), &[], b"{}").await;
    raw(addr, "PUT", &format!("{A}/1/r1/artifacts/empty"), &[], b"").await;

    let (s, body) = raw(addr, "GET", &format!("{A}/1/r1/artifacts/dir/a.txt"), &[], b"").await;
    assert_eq!((s, body.as_str()), (200, "alpha"));
    let (s, body) = raw(addr, "GET", &format!("{A}/1/r1/artifacts/empty"), &[], b"").await;
    assert_eq!((s, body.as_str()), (200, ""));

    let (s, body) = raw(addr, "GET", &format!("{A}?path=1/r1/artifacts"), &[], b"").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body_json(&body),
        json!({"files": [
            {"path": "dir", "is_dir": true},
            {"path": "empty", "is_dir": false, "file_size": 0},
            {"path": "top.json", "is_dir": false, "file_size": 2},
        ]})
    );
    let (_, body) = raw(addr, "GET", &format!("{A}?path=1/r1/artifacts/dir/"), &[], b"").await;
    assert_eq!(
        body_json(&body),
        json!({"files": [{"path": "a.txt", "is_dir": false, "file_size": 5}, {"path": "sub", "is_dir": true}]})
    );
    let (_, body) = raw(addr, "GET", &format!("{A}?path=1/r1/artifacts/nothing/here"), &[], b"").await;
    assert_eq!(body_json(&body), json!({"files": []}));
    let (_, body) = raw(addr, "GET", &format!("{A}?path=1/r1/artifacts/dir/a.txt"), &[], b"").await;
    assert_eq!(body_json(&body), json!({"files": []}), "a file lists as empty");

    // Overwrite, then delete a folder (twice: a retried delete succeeds).
    raw(addr, "PUT", &format!("{A}/1/r1/artifacts/dir/a.txt"), &[], b"beta!").await;
    let (_, body) = raw(addr, "GET", &format!("{A}/1/r1/artifacts/dir/a.txt"), &[], b"").await;
    assert_eq!(body, "beta!");
    for _ in 0..2 {
        let (s, body) = raw(addr, "DELETE", &format!("{A}/1/r1/artifacts/dir"), &[], b"").await;
        assert_eq!((s, body_json(&body)), (200, json!({})));
    }
    assert_error(
        raw(addr, "GET", &format!("{A}/1/r1/artifacts/dir/sub/b.bin"), &[], b"").await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "dir/sub/b.bin",
    );
    let (_, body) = raw(addr, "GET", &format!("{A}?path=1/r1/artifacts"), &[], b"").await;
    let names: Vec<Value> = body_json(&body)["files"].as_array().unwrap().iter().map(|f| f["path"].clone()).collect();
    assert_eq!(names, [json!("empty"), json!("top.json")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_and_list_like_mlflow() {
    let dest = tempfile::tempdir().unwrap();
    let server = serve(ArtifactStore::local(dest.path()).unwrap(), None).await;
    basic_round_trip(&server).await;
    // The same on the UI's prefix.
    let (s, _) = raw(server.addr, "PUT", "/ajax-api/2.0/mlflow-artifacts/artifacts/2/r/artifacts/x", &[], b"x").await;
    assert_eq!(s, 200);
    assert_eq!(std::fs::read(dest.path().join("2/r/artifacts/x")).unwrap(), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_and_list_like_mlflow_on_s3() {
    let server = serve(s3_destination("http-suite").await, None).await;
    basic_round_trip(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_unsafe_paths_are_refused_and_nothing_escapes() {
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    std::fs::write(outer.path().join("secret.txt"), "do not touch").unwrap();
    let server = serve(ArtifactStore::local(&dest).unwrap(), None).await;
    let addr = server.addr;

    // (request path, what the error message must name)
    let cases = [
        (format!("{A}/1/../../secret.txt"), "'..'"),
        (format!("{A}/../secret.txt"), "'..'"),
        (format!("{A}/1/r/%2e%2e/%2E%2E/%2e%2e/secret.txt"), "'..'"),
        (format!("{A}/..%2F..%2Fsecret.txt"), "'..'"),
        (format!("{A}//etc/passwd"), "absolute"),
        (format!("{A}/%2Fetc%2Fpasswd"), "absolute"),
        (format!("{A}/1/r/..%5C..%5Csecret.txt"), "backslash"),
        (format!("{A}/1/r/a%00b"), "NUL"),
        (format!("{A}/1/r/./x"), "'.'"),
        (format!("{A}/1/r//x"), "empty segment"),
        (format!("{A}/C:/x"), "drive letter"),
    ];
    for (path, mentions) in &cases {
        for method in ["PUT", "GET", "DELETE"] {
            let got = raw(addr, method, path, &[], b"overwritten").await;
            assert_error(got, 400, "INVALID_PARAMETER_VALUE", mentions);
        }
    }
    for q in ["..", "../..", "1/../..", "/etc", "%2Fetc", "a%5Cb", "a%00", "1/./x"] {
        let got = raw(addr, "GET", &format!("{A}?path={q}"), &[], b"").await;
        assert_error(got, 400, "INVALID_PARAMETER_VALUE", "Invalid artifact path");
    }
    // The message names the offending path.
    let (_, body) = raw(addr, "PUT", &format!("{A}/1/../../secret.txt"), &[], b"x").await;
    assert!(body_json(&body)["message"].as_str().unwrap().contains("'1/../../secret.txt'"), "{body}");

    // Nothing outside the destination changed or appeared, and nothing inside either.
    assert_eq!(std::fs::read_to_string(outer.path().join("secret.txt")).unwrap(), "do not touch");
    let mut names: Vec<String> =
        std::fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    names.sort();
    assert_eq!(names, ["dest", "secret.txt"]);
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0, "something was written into the destination");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_limits_multipart_and_unknown_endpoints_answer_in_mlflow_shape() {
    let dest = tempfile::tempdir().unwrap();
    let server = serve(ArtifactStore::local(dest.path()).unwrap(), None).await;
    let addr = server.addr;

    assert_error(
        raw(addr, "GET", &format!("{A}/1/r/artifacts/missing.txt"), &[], b"").await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "1/r/artifacts/missing.txt",
    );
    raw(addr, "PUT", &format!("{A}/1/r/artifacts/d/f"), &[], b"f").await;
    assert_error(
        raw(addr, "GET", &format!("{A}/1/r/artifacts/d"), &[], b"").await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "d",
    );
    assert_error(
        raw(addr, "PUT", &format!("{A}/1/r/artifacts/d/"), &[], b"x").await,
        400,
        "INVALID_PARAMETER_VALUE",
        "ends with '/'",
    );

    // Over 5 GiB by Content-Length: refused before reading a byte.
    let got = raw(addr, "PUT", &format!("{A}/1/r/artifacts/huge.bin"), &[("Content-Length", "5368709121")], b"").await;
    assert_error(got, 413, "INVALID_PARAMETER_VALUE", "larger than the limit");
    assert_error(
        raw(addr, "GET", &format!("{A}/1/r/artifacts/huge.bin"), &[], b"").await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "huge.bin",
    );

    // Multipart and presigned URLs: declined with the message the client falls back on.
    for op in ["create", "complete", "abort"] {
        let got = raw(
            addr,
            "POST",
            &format!("/api/2.0/mlflow-artifacts/mpu/{op}/1/r/artifacts"),
            &[("Content-Type", "application/json")],
            br#"{"path": "big.bin", "num_parts": 3}"#,
        )
        .await;
        assert_error(
            got,
            501,
            "NOT_IMPLEMENTED",
            "Multipart upload is not supported for the current artifact repository",
        );
    }
    assert_error(
        raw(addr, "GET", "/api/2.0/mlflow-artifacts/presigned/1/r/artifacts/d/f", &[], b"").await,
        501,
        "NOT_IMPLEMENTED",
        "Presigned",
    );

    // Unknown endpoints and methods.
    assert_error(
        raw(addr, "GET", "/api/2.0/mlflow-artifacts/nope", &[], b"").await,
        404,
        "ENDPOINT_NOT_FOUND",
        "/api/2.0/mlflow-artifacts/nope",
    );
    assert_error(
        raw(addr, "POST", &format!("{A}/1/r/artifacts/d/f"), &[], b"").await,
        405,
        "ENDPOINT_NOT_FOUND",
        "does not accept POST",
    );
    assert_error(raw(addr, "DELETE", A, &[], b"").await, 405, "ENDPOINT_NOT_FOUND", "does not accept DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_sits_behind_the_api_token() {
    let dest = tempfile::tempdir().unwrap();
    let token = "cap_artifacts_test_token";
    let server = serve(ArtifactStore::local(dest.path()).unwrap(), Some(capstan_server::auth::hash_token(token))).await;
    let addr = server.addr;
    let (s, _) = raw(addr, "PUT", &format!("{A}/1/r/artifacts/f"), &[], b"f").await;
    assert_eq!(s, 401);
    let (s, _) = raw(addr, "GET", &format!("{A}?path=1"), &[], b"").await;
    assert_eq!(s, 401);
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0);
    let auth = format!("Bearer {token}");
    let (s, _) = raw(addr, "PUT", &format!("{A}/1/r/artifacts/f"), &[("Authorization", &auth)], b"f").await;
    assert_eq!(s, 200);
    let (s, body) = raw(addr, "GET", &format!("{A}/1/r/artifacts/f"), &[("Authorization", &auth)], b"").await;
    assert_eq!((s, body.as_str()), (200, "f"));
}
