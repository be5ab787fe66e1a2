//! Fuzzes the HTTP API's request parsing (`vmm::api::parse_request`): any method, path
//! and body (the first byte picks the method, then a path up to the first NUL, then
//! the body). Checks: errors carry 400, 404 or 405 (405 with `Allow`) and a JSON body;
//! what parses is what the path and method name, with a valid configuration or grace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::api::{parse_request, ApiRequest, MAX_BODY};

const METHODS: [&str; 6] = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let method = METHODS[usize::from(pick) % METHODS.len()];
    let (url, body) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let url = String::from_utf8_lossy(url);
    let body = &body[..body.len().min(MAX_BODY)];
    match parse_request(method, &url, body) {
        Ok(request) => {
            let path = url.split('?').next().unwrap_or_default();
            assert!(path.starts_with("/v1/"), "{path}");
            match request {
                ApiRequest::CreateVm(config) => {
                    assert_eq!((method, path), ("PUT", "/v1/vm"));
                    let again = vmm::VmConfig::from_json(&config.to_json()).expect("printed configurations read back");
                    assert_eq!(again, *config);
                }
                ApiRequest::Shutdown(grace) => {
                    assert_eq!((method, path), ("PUT", "/v1/vm/shutdown"));
                    assert!(grace.as_secs() <= 86_400);
                }
                ApiRequest::GetVm | ApiRequest::GetConfig | ApiRequest::GetLaunchLog | ApiRequest::Ping => {
                    assert_eq!(method, "GET")
                }
                _ => assert_eq!(method, "PUT"),
            }
        }
        Err(reply) => {
            assert!(matches!(reply.status, 400 | 404 | 405), "status {}", reply.status);
            assert_eq!(reply.allow.is_some(), reply.status == 405);
            let body = reply.body.expect("errors have a body");
            let value: serde_json::Value = serde_json::from_str(&body).expect("error bodies are JSON");
            assert!(value["error"].is_string());
        }
    }
});
