//! `/openapi.json` and the routes stay in step: every documented operation is served
//! (never "no route" or 405), and every answer it gives is one of its documented
//! responses.

use crate::service::{Service, TOKEN, seed};

#[tokio::test]
async fn every_documented_operation_is_served_with_a_documented_status() {
    let s = Service::start(&[]).await;
    seed(&s).await;
    let spec = s.get("/openapi.json").await;
    assert_eq!(spec.status, 200);
    assert_eq!(spec.body["openapi"], "3.1.0");
    let paths = spec.body["paths"].as_object().expect("paths");
    assert!(paths.len() >= 20, "{} paths", paths.len());
    let mut checked = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let url = format!("{}{}", s.url, path.replace("{id}", "1"));
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let mut req = s.http.request(method.clone(), url).bearer_auth(TOKEN);
            if operation.get("requestBody").is_some() {
                req = req.header("content-type", "application/json").body("{}");
            }
            let reply = s.send(req).await;
            assert_ne!(reply.status, 405, "{method} {path}: method not routed");
            assert_ne!(
                reply.body["error"]["code"], "no_route",
                "{method} {path}: not routed"
            );
            let documented = operation["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(&reply.status.to_string()),
                "{method} {path} answered {} ({}), documented: {:?}",
                reply.status,
                reply.body,
                documented.keys().collect::<Vec<_>>()
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} operations");
    // Undocumented routes are not served.
    assert_eq!(
        s.get("/users/1/secrets").await.body["error"]["code"],
        "no_route"
    );
}
