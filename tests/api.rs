//! The HTTP API over a Unix socket (`cvmm serve --api-socket`, `cvmm run --api-socket`),
//! driven with curl as a client would: the demo guest's whole life (create, boot, info,
//! pause, resume, shutdown, exited with its reason, launch log), a forced shutdown, and
//! every kind of bad request (400, 404, 405, 409, 413) plus garbage on the socket.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cvmm, temp_file, tiny_elf};
use serde_json::Value;

const WAITING: &str = "demo: waiting for Ctrl-Alt-Del";
const GOODBYE: &str = "demo: Ctrl-Alt-Del, shutting down";

/// A running `cvmm` with an API socket, its stdout collected line by line.
struct Cvmm {
    child: Child,
    socket: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Cvmm {
    /// Starts `cvmm ARGS --api-socket <fresh path>` (ARGS: `serve` or `run ...`) and
    /// waits for its socket.
    fn start(args: &[&str]) -> Self {
        let dir = temp_file("placeholder", b"").parent().unwrap().to_owned();
        let socket = dir.join("api.sock");
        let mut child = cvmm()
            .args(["--log-level", "debug"])
            .args(args)
            .arg("--api-socket")
            .arg(&socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("cvmm ended ({status}) before serving its API:\n{err}");
            }
            assert!(Instant::now() < deadline, "the API socket never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, socket, stdout }
    }

    /// `curl -X METHOD` on `path` with an optional body; returns the status, the body
    /// and the response headers (lower-case names).
    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String, String) {
        curl(&self.socket, method, path, body, &[])
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (status, body, _) = self.request("GET", path, None);
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body:?}")))
    }

    fn put(&self, path: &str, body: &str) -> (u16, String) {
        let (status, body, _) = self.request("PUT", path, Some(body.as_bytes()));
        (status, body)
    }

    fn state(&self) -> String {
        let (status, info) = self.get("/v1/vm");
        assert_eq!(status, 200, "{info}");
        info["state"].as_str().unwrap().to_string()
    }

    /// Polls until the VM's state is `want` (fails after 30 s).
    fn wait_for_state(&self, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, info) = self.get("/v1/vm");
            if info["state"] == want {
                return info;
            }
            assert!(Instant::now() < deadline, "the VM never became {want}: {info}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until the guest has printed `text` (fails after 30 s).
    fn wait_for_output(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.output().contains(text) {
            assert!(Instant::now() < deadline, "the guest never printed {text:?}; stdout:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn output(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Waits for the process to end (fails after 30 s) and returns its exit code and
    /// stderr.
    fn wait_for_exit(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "cvmm did not end");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status.code(), err)
    }
}

impl Drop for Cvmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request with curl over the Unix socket.
fn curl(socket: &Path, method: &str, path: &str, body: Option<&[u8]>, extra: &[&str]) -> (u16, String, String) {
    let dir = temp_file("placeholder", b"").parent().unwrap().to_owned();
    let headers = dir.join("headers");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "--unix-socket"])
        .arg(socket)
        .args(["-X", method, "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(extra);
    if let Some(b) = body {
        let file = dir.join("body");
        std::fs::write(&file, b).unwrap();
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    let out = cmd.arg(format!("http://localhost{path}")).output().expect("curl is installed (scripts/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "curl {method} {path} failed: {}", String::from_utf8_lossy(&out.stderr));
    let (body, code) = text.rsplit_once('\n').unwrap();
    let headers = std::fs::read_to_string(headers).unwrap_or_default().to_ascii_lowercase();
    (code.parse().unwrap(), body.to_string(), headers)
}

/// The error message of a JSON error body.
fn error_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    v["error"].as_str().unwrap_or_else(|| panic!("no error field: {body}")).to_string()
}

#[test]
fn the_demo_guest_lives_its_whole_life_through_the_api() {
    let vmm = Cvmm::start(&["serve"]);
    let mode = std::fs::metadata(&vmm.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may connect");
    let (status, ping) = vmm.get("/v1/vmm/ping");
    assert_eq!((status, ping["version"].as_str().is_some()), (200, true));

    assert_eq!(vmm.put("/v1/vm", r#"{"cmdline": "wait", "timeout_secs": 120}"#).0, 204);
    let (status, info) = vmm.get("/v1/vm");
    assert_eq!(status, 200);
    assert_eq!(info["state"], "created");
    assert_eq!(info["tee"], "plain");
    assert_eq!(info["expected_measurement"], Value::Null);
    assert_eq!(info["vcpus"], 1);
    assert_eq!(info["memory_bytes"], 256u64 << 20);
    assert_eq!(info["launch_steps"].as_array().unwrap().len(), 5);
    assert_eq!(info["exit"], Value::Null);
    let (status, config) = vmm.get("/v1/vm/config");
    assert_eq!((status, config["cmdline"].as_str(), config["timeout_secs"].as_f64()), (200, Some("wait"), Some(120.0)));

    assert_eq!(vmm.put("/v1/vm/boot", "").0, 204);
    assert_eq!(vmm.state(), "running");
    vmm.wait_for_output(WAITING);
    assert_eq!(vmm.put("/v1/vm/pause", "").0, 204);
    assert_eq!(vmm.state(), "paused");
    assert_eq!(vmm.put("/v1/vm/resume", "").0, 204);
    assert_eq!(vmm.state(), "running");
    assert_eq!(vmm.put("/v1/vm/shutdown", r#"{"timeout_secs": 60}"#).0, 202);
    let info = vmm.wait_for_state("exited");
    assert_eq!(info["exit"]["reason"], "guest_exit", "{info}");
    assert_eq!(info["exit"]["exit_status"], 0);
    assert_eq!(info["exit"]["guest_requested"], true);
    assert_eq!(info["exit"]["message"], "the guest exited with status 0");
    vmm.wait_for_output(GOODBYE);
    let (status, log) = vmm.get("/v1/vm/launch-log");
    assert_eq!((status, log), (200, Value::Array(Vec::new())), "a plain VM measures nothing");

    // An exited VM can be replaced by a new one, and so can one not booted yet.
    assert_eq!(vmm.put("/v1/vm", r#"{"vcpus": 2}"#).0, 204);
    assert_eq!(vmm.state(), "created");
    assert_eq!(vmm.put("/v1/vm", r#"{"vcpus": 3}"#).0, 204);
    assert_eq!(vmm.get("/v1/vm").1["vcpus"], 3);

    assert_eq!(vmm.put("/v1/vmm/shutdown", "").0, 204);
    let socket = vmm.socket.clone();
    let (code, stderr) = vmm.wait_for_exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!socket.exists(), "the socket is removed on exit");
    assert!(stderr.contains("VM paused") && stderr.contains("VM resumed"), "{stderr}");
}

#[test]
fn an_emulated_snp_guest_lives_its_life_through_the_api_with_its_measurement_and_launch_log() {
    let vmm = Cvmm::start(&["serve"]);
    let config = r#"{"rng": true, "timeout_secs": 120, "tee": {"type": "snp", "emulated": true}}"#;
    assert_eq!(vmm.put("/v1/vm", config).0, 204);
    let (status, info) = vmm.get("/v1/vm");
    assert_eq!((status, info["state"].as_str(), info["tee"].as_str()), (200, Some("created"), Some("snp-emulated")));
    let expected = info["expected_measurement"].as_str().expect("an SNP VM has an expected measurement").to_string();
    let measure = common::cvmm().args(["measure", "--tee", "snp", "--emulated", "--rng"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&measure.stdout).trim(), expected);
    let (status, log) = vmm.get("/v1/vm/launch-log");
    assert_eq!(status, 200);
    assert!(log.as_array().is_some_and(|l| l.len() >= 5), "ranges and VMSA: {log}");

    assert_eq!(vmm.put("/v1/vm/boot", "").0, 204);
    let info = vmm.wait_for_state("exited");
    assert_eq!(info["exit"]["reason"], "guest_exit", "{info}");
    assert_eq!(info["exit"]["exit_status"], 0);
    vmm.wait_for_output(&format!("attestation: measurement {expected}"));
    assert_eq!(vmm.put("/v1/vmm/shutdown", "").0, 204);
    let (code, stderr) = vmm.wait_for_exit();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn an_emulated_td_lives_its_life_through_the_api_with_its_mrtd() {
    let vmm = Cvmm::start(&["serve"]);
    let config = r#"{"rng": true, "memory": "64M", "timeout_secs": 120, "tee": {"type": "tdx", "emulated": true}}"#;
    assert_eq!(vmm.put("/v1/vm", config).0, 204);
    let (status, info) = vmm.get("/v1/vm");
    assert_eq!((status, info["tee"].as_str()), (200, Some("tdx-emulated")));
    let expected = info["expected_measurement"].as_str().expect("a TD has an expected MRTD").to_string();
    let measure =
        common::cvmm().args(["measure", "--tee", "tdx", "--emulated", "--rng", "--memory", "64M"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&measure.stdout).trim(), expected);
    assert_eq!(vmm.put("/v1/vm/boot", "").0, 204);
    let info = vmm.wait_for_state("exited");
    assert_eq!(info["exit"]["reason"], "guest_exit", "{info}");
    vmm.wait_for_output(&format!("attestation: mrtd {expected}"));
    assert_eq!(vmm.put("/v1/vmm/shutdown", "").0, 204);
    let (code, stderr) = vmm.wait_for_exit();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_guest_that_ignores_the_shutdown_request_is_ended_after_the_timeout() {
    // cli; hlt; jmp back: the keyboard interrupt never gets in.
    let kernel = temp_file("deaf.elf", &tiny_elf(&[0xfa, 0xf4, 0xeb, 0xfc]));
    let vmm = Cvmm::start(&["serve"]);
    let config = serde_json::json!({ "kernel": kernel, "timeout_secs": 120 }).to_string();
    assert_eq!(vmm.put("/v1/vm", &config).0, 204);
    assert_eq!(vmm.put("/v1/vm/boot", "").0, 204);
    let asked = Instant::now();
    assert_eq!(vmm.put("/v1/vm/shutdown", r#"{"timeout_secs": 0.3}"#).0, 202);
    let info = vmm.wait_for_state("exited");
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert_eq!(info["exit"]["reason"], "shutdown_forced", "{info}");
    assert_eq!(info["exit"]["exit_status"], 1);
    assert_eq!(info["exit"]["guest_requested"], false);
}

#[test]
fn bad_requests_get_the_right_status_and_a_json_error() {
    let vmm = Cvmm::start(&["serve"]);
    // No VM yet.
    let (status, body, _) = vmm.request("GET", "/v1/vm", None);
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("no VM"), "{body}");
    assert_eq!(vmm.put("/v1/vm/boot", "").0, 404);

    // Unknown paths.
    for path in ["/", "/v1", "/v1/vm/", "/v1/vm/reboot", "/v2/vm", "/v1/vmm"] {
        let (status, body, _) = vmm.request("GET", path, None);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!error_of(&body).is_empty());
    }

    // Wrong methods, with the allowed ones named.
    for (method, path, allow) in [
        ("GET", "/v1/vm/boot", "put"),
        ("POST", "/v1/vm", "get, put"),
        ("DELETE", "/v1/vm", "get, put"),
        ("PUT", "/v1/vm/launch-log", "get"),
        ("PATCH", "/v1/vm/pause", "put"),
    ] {
        let (status, body, headers) = vmm.request(method, path, None);
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert!(headers.contains(&format!("allow: {allow}\r\n")), "{method} {path}: {headers}");
        assert!(error_of(&body).contains(method), "{body}");
    }

    // Bodies that are not a configuration.
    for (body, says) in [
        ("{\"cmdline\": \"wait\"", "EOF while parsing"),
        ("[268435456, 1]", "JSON object"),
        ("42", "JSON object"),
        ("", "configuration (JSON) is required"),
        (r#"{"memroy": "1G"}"#, "unknown field `memroy`"),
        (r#"{"vcpus": 0}"#, "vcpus"),
        (r#"{"memory": "lots"}"#, "memory"),
        (r#"{"kernel": "/nonexistent/vmlinux"}"#, "/nonexistent/vmlinux"),
    ] {
        let (status, reply) = vmm.put("/v1/vm", body);
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(error_of(&reply).contains(says), "{body}: {reply}");
    }
    let (status, _, _) = vmm.request("PUT", "/v1/vm", Some(b"{\"cmdline\": \"\xff\xfe\"}"));
    assert_eq!(status, 400, "invalid UTF-8");

    // Oversize bodies: with a Content-Length, and chunked (no length known up front).
    let big = vec![b' '; 70_000];
    let (status, reply, _) = vmm.request("PUT", "/v1/vm", Some(&big));
    assert_eq!(status, 413, "{reply}");
    assert!(error_of(&reply).contains("65536"), "{reply}");
    let (status, reply, _) = curl(&vmm.socket, "PUT", "/v1/vm", Some(&big), &["-H", "Transfer-Encoding: chunked"]);
    assert_eq!(status, 413, "chunked: {reply}");

    // Transitions the VM's state does not allow.
    assert_eq!(vmm.put("/v1/vm", r#"{"cmdline": "wait", "timeout_secs": 120}"#).0, 204);
    for action in ["pause", "resume", "shutdown"] {
        let (status, reply) = vmm.put(&format!("/v1/vm/{action}"), "");
        assert_eq!(status, 409, "{action} before boot: {reply}");
        assert!(error_of(&reply).contains("it is created"), "{reply}");
    }
    assert_eq!(vmm.put("/v1/vm/boot", "").0, 204);
    for (path, body) in [("/v1/vm/boot", ""), ("/v1/vm/resume", ""), ("/v1/vm", "{}")] {
        let (status, reply) = vmm.put(path, body);
        assert_eq!(status, 409, "{path} while running: {reply}");
        assert!(error_of(&reply).contains("running"), "{reply}");
    }
    for body in [r#"{"timeout_secs": -1}"#, r#"{"timeout_secs": "soon"}"#, r#"{"grace": 1}"#, "{"] {
        let (status, reply) = vmm.put("/v1/vm/shutdown", body);
        assert_eq!(status, 400, "{body}: {reply}");
    }
    assert_eq!(vmm.state(), "running", "rejected requests changed nothing");
    assert_eq!(vmm.put("/v1/vm/pause", "").0, 204);
    assert_eq!(vmm.put("/v1/vm/pause", "").0, 409);
    assert_eq!(vmm.put("/v1/vm/shutdown", r#"{"timeout_secs": 60}"#).0, 202);
    vmm.wait_for_state("exited");
    for action in ["boot", "pause", "resume", "shutdown"] {
        let (status, reply) = vmm.put(&format!("/v1/vm/{action}"), "");
        assert_eq!(status, 409, "{action} after exit: {reply}");
        assert!(error_of(&reply).contains("it is exited"), "{reply}");
    }
}

#[test]
fn garbage_on_the_socket_does_not_hurt_the_server() {
    let vmm = Cvmm::start(&["serve"]);
    let junk: [&[u8]; 6] = [
        b"GARBAGE\r\n\r\n",
        b"\x00\x01\x02\xff\xfe\r\n\r\n",
        b"GET /v1/vm HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"PUT /v1/vm HTTP/1.1\r\nContent-Length: 10\r\n\r\n{",
        b"GET /v1/vm HTTP/9.9\r\n\r\n",
        b"GET /v1/vm HTTP/1.1\r\nExpect: something-else\r\n\r\n",
    ];
    for bytes in junk {
        let mut s = UnixStream::connect(&vmm.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
    }
    // A client that connects and goes away, and one that sends half a request line.
    drop(UnixStream::connect(&vmm.socket).unwrap());
    let mut half = UnixStream::connect(&vmm.socket).unwrap();
    half.write_all(b"GET /v1/v").unwrap();
    let (status, ping) = vmm.get("/v1/vmm/ping");
    assert_eq!(status, 200, "{ping}");
    assert_eq!(vmm.put("/v1/vm", "{}").0, 204);
    assert_eq!(vmm.state(), "created");
}

#[test]
fn run_with_an_api_socket_serves_the_vm_it_runs_and_exits_with_it() {
    let vmm = Cvmm::start(&["run", "--cmdline", "wait", "--timeout", "120"]);
    vmm.wait_for_output(WAITING);
    assert_eq!(vmm.state(), "running");
    let (_, config) = vmm.get("/v1/vm/config");
    assert_eq!(config["cmdline"], "wait");
    assert_eq!(vmm.put("/v1/vm/pause", "").0, 204);
    assert_eq!(vmm.state(), "paused");
    assert_eq!(vmm.put("/v1/vm/resume", "").0, 204);
    assert_eq!(vmm.put("/v1/vm/shutdown", "").0, 202);
    let socket = vmm.socket.clone();
    let output = vmm.stdout.clone();
    let (code, stderr) = vmm.wait_for_exit();
    assert_eq!(code, Some(0), "the guest's own status; stderr:\n{stderr}");
    assert!(output.lock().unwrap().iter().any(|l| l == GOODBYE), "{stderr}");
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[test]
fn a_path_taken_by_something_else_is_refused_and_a_stale_socket_is_replaced() {
    let file = temp_file("not-a-socket", b"precious");
    let out = cvmm().args(["serve", "--api-socket"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious", "left alone");

    // A socket nobody listens on any more (its server died without removing it).
    let stale = file.with_file_name("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut child = cvmm().args(["serve", "--api-socket"]).arg(&stale).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl_ping(&stale) != Some(200) {
        assert!(child.try_wait().unwrap().is_none(), "cvmm serve ended");
        assert!(Instant::now() < deadline, "cvmm never served on the stale socket's path");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second server on a live socket is refused.
    let out = cvmm().args(["serve", "--api-socket"]).arg(&stale).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a server answers on it"));
    let _ = child.kill();
    let _ = child.wait();
}

fn curl_ping(socket: &Path) -> Option<u16> {
    if UnixStream::connect(socket).is_err() {
        return None;
    }
    Some(curl(socket, "GET", "/v1/vmm/ping", None, &[]).0)
}

#[test]
fn docs_api_yaml_describes_exactly_the_paths_and_methods_served() {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.yaml")).unwrap();
    // Under `paths:`, a path is a two-space-indented key and its operations are
    // four-space-indented method keys.
    let mut documented: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_paths = false;
    for line in yaml.lines() {
        if !line.starts_with(' ') {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(path) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            documented.push((format!("/{path}"), Vec::new()));
        } else if let Some(method) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            if ["get", "put", "post", "delete", "patch"].contains(&method) {
                documented.last_mut().unwrap().1.push(method.to_ascii_uppercase());
            }
        }
    }
    let mut documented: Vec<(String, String)> = documented.into_iter().map(|(p, m)| (p, m.join(", "))).collect();
    documented.sort();
    let mut served: Vec<(String, String)> =
        vmm::api::routes().into_iter().map(|(p, m)| (p.to_string(), m.to_string())).collect();
    served.sort();
    assert_eq!(documented, served);
}
