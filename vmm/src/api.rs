//! The HTTP/1.1 API over a Unix socket (`cvmm serve --api-socket PATH`,
//! `cvmm run --api-socket PATH`): create a VM from its JSON configuration, boot it,
//! query it, pause and resume it, shut it down, read its launch log. It drives one
//! [`VmHandle`]; docs/api.md explains it with curl examples, docs/api.yaml describes
//! it in OpenAPI 3.
//!
//! | method and path | does | success |
//! |---|---|---|
//! | `GET /v1/vmm/ping` | cvmm's version | 200 `{"version": ...}` |
//! | `PUT /v1/vmm/shutdown` | ends the VM at once, if it runs, and stops serving | 204 |
//! | `PUT /v1/vm` | builds a VM from a configuration ([`VmConfig::from_json`]), replacing one not booted yet or exited | 204 |
//! | `GET /v1/vm` | its state and launch information ([`crate::VmInfo`]) | 200 |
//! | `GET /v1/vm/config` | its configuration, in the schema `PUT /v1/vm` reads | 200 |
//! | `PUT /v1/vm/boot` | starts it ([`VmHandle::start`]) | 204 |
//! | `PUT /v1/vm/pause`, `PUT /v1/vm/resume` | [`VmHandle::pause`], [`VmHandle::resume`] | 204 |
//! | `PUT /v1/vm/shutdown` | [`VmHandle::shutdown`], body `{"timeout_secs": N}` optional | 202 |
//! | `GET /v1/vm/launch-log` | the measured launch plan, a JSON array | 200 |
//!
//! Every error is JSON `{"error": "..."}`: 400 for a body that is not valid JSON or a
//! configuration cvmm cannot build, 404 for an unknown path (or no VM yet), 405 for a
//! method the path does not take (with `Allow`), 409 for a request the VM's state does
//! not allow, 413 for a body over [`MAX_BODY`] bytes, 500 for a failure of the host.
//!
//! Robustness: requests are parsed by tiny_http (malformed ones get its own 400) and
//! served one at a time on the serving thread; nothing a client sends reaches a
//! `panic!` or an `unwrap` here (a release build aborts on panic, so the serving
//! thread must not panic). The socket is created with mode 0600: the API is an
//! administrative interface, as powerful as the user running cvmm (it opens the
//! kernel and disk paths it is given), so only that user may connect.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tiny_http::{Header, Request, Response};

use crate::builder::BuildError;
use crate::config::VmConfig;
use crate::error_chain;
use crate::handle::{ControlError, VmHandle, VmState};

/// The largest request body the API reads, in bytes (a configuration is far smaller).
pub const MAX_BODY: usize = 64 * 1024;
/// How long `PUT /v1/vm/shutdown` gives the guest when the request names no timeout.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The longest shutdown grace period the API accepts, in seconds.
const MAX_SHUTDOWN_SECS: f64 = 86_400.0;

/// Errors from setting up the API socket.
#[derive(Debug, Error)]
pub enum ApiError {
    /// Something other than a stale cvmm socket is at the path.
    #[error("cannot serve the API on {path}: it exists{why}; remove it or choose another path")]
    Exists {
        /// The socket path.
        path: PathBuf,
        /// What is there.
        why: &'static str,
    },
    /// The socket could not be created or prepared.
    #[error("cannot serve the API on {path}: {what}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Makes the console output of each VM the API creates.
pub type ConsoleFactory = Box<dyn Fn() -> Box<dyn Write + Send> + Send + Sync>;

/// The VM the API drives, with the configuration it was built from.
struct Managed {
    handle: Arc<VmHandle>,
    config: VmConfig,
}

/// An API server bound to its Unix socket; [`ApiServer::serve`] answers requests.
/// Dropping it removes the socket file.
pub struct ApiServer {
    server: tiny_http::Server,
    path: PathBuf,
    console: ConsoleFactory,
    vm: Mutex<Option<Managed>>,
    stopping: AtomicBool,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").field("path", &self.path).finish_non_exhaustive()
    }
}

/// An answer: status, JSON body (if any), and the methods a path allows (for 405).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The JSON body; `None` for 202/204.
    pub body: Option<String>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, value: &impl Serialize) -> Self {
        match serde_json::to_string(value) {
            Ok(body) => Self { status, body: Some(body), allow: None },
            Err(e) => Self::error(500, format!("cannot serialize the answer: {e}")),
        }
    }

    fn empty(status: u16) -> Self {
        Self { status, body: None, allow: None }
    }

    /// An error answer, `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        #[derive(Serialize)]
        struct ErrorBody {
            error: String,
        }
        let body = serde_json::to_string(&ErrorBody { error: message.into() })
            .unwrap_or_else(|_| r#"{"error":"unprintable error"}"#.to_string());
        Self { status, body: Some(body), allow: None }
    }
}

/// The body of `PUT /v1/vm/shutdown`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownBody {
    /// How long the guest has to end the VM before it is ended by force.
    timeout_secs: Option<f64>,
}

/// What a path accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Ping,
    VmmShutdown,
    Vm,
    Config,
    Boot,
    Pause,
    Resume,
    Shutdown,
    LaunchLog,
}

impl Route {
    const ALL: [Route; 9] = [
        Route::Ping,
        Route::VmmShutdown,
        Route::Vm,
        Route::Config,
        Route::Boot,
        Route::Pause,
        Route::Resume,
        Route::Shutdown,
        Route::LaunchLog,
    ];

    fn path(self) -> &'static str {
        match self {
            Route::Ping => "/v1/vmm/ping",
            Route::VmmShutdown => "/v1/vmm/shutdown",
            Route::Vm => "/v1/vm",
            Route::Config => "/v1/vm/config",
            Route::Boot => "/v1/vm/boot",
            Route::Pause => "/v1/vm/pause",
            Route::Resume => "/v1/vm/resume",
            Route::Shutdown => "/v1/vm/shutdown",
            Route::LaunchLog => "/v1/vm/launch-log",
        }
    }

    fn find(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.path() == path)
    }

    /// The `Allow` header value.
    fn allowed(self) -> &'static str {
        match self {
            Route::Vm => "GET, PUT",
            Route::Ping | Route::Config | Route::LaunchLog => "GET",
            Route::VmmShutdown | Route::Boot | Route::Pause | Route::Resume | Route::Shutdown => "PUT",
        }
    }
}

/// Every path the API serves, with the methods it takes (as the `Allow` header lists
/// them), for documentation checks.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    Route::ALL.iter().map(|r| (r.path(), r.allowed())).collect()
}

/// The HTTP status for a build failure: 400 when the configuration or its files are
/// at fault, 500 when the host is.
fn build_error_status(e: &BuildError) -> u16 {
    match e {
        BuildError::Config(_)
        | BuildError::KernelFile { .. }
        | BuildError::Kernel { .. }
        | BuildError::KernelTooLow { .. }
        | BuildError::InitrdFile { .. }
        | BuildError::BootData(_)
        | BuildError::TooManyVcpus { .. }
        | BuildError::MpTable(_)
        | BuildError::Disk { .. }
        | BuildError::Device { .. } => 400,
        _ => 500,
    }
}

fn control_error(e: &ControlError) -> Reply {
    let status = match e {
        ControlError::WrongState { .. } => 409,
        ControlError::PauseTimeout { .. } | ControlError::Run(_) => 500,
    };
    Reply::error(status, error_chain(e))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ApiServer {
    /// Creates the socket at `path` (mode 0600) and a server on it. A stale socket
    /// left by a cvmm that ended without removing it is replaced; anything else at
    /// the path is an error. Each VM created through the API writes its console to a
    /// writer from `console`.
    pub fn bind(path: &Path, console: ConsoleFactory) -> Result<Self, ApiError> {
        let err = |what| move |source| ApiError::Socket { path: path.to_path_buf(), what, source };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ApiError::Exists { path: path.to_path_buf(), why: " and is not a socket" });
            }
            match UnixStream::connect(path) {
                Ok(_) => return Err(ApiError::Exists { path: path.to_path_buf(), why: " and a server answers on it" }),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    log::info!("replacing the stale API socket {}", path.display());
                    std::fs::remove_file(path).map_err(err("remove the stale socket"))?;
                }
                Err(e) => return Err(err("probe the existing socket")(e)),
            }
        }
        let listener = UnixListener::bind(path).map_err(err("bind"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err("chmod 0600"))?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| err("start the server")(std::io::Error::other(e.to_string())))?;
        log::info!("API listening on {}", path.display());
        Ok(Self { server, path: path.to_path_buf(), console, vm: Mutex::new(None), stopping: AtomicBool::new(false) })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts an already built (or running) VM under the API (`cvmm run --api-socket`).
    pub fn attach(&self, handle: Arc<VmHandle>, config: VmConfig) {
        *lock(&self.vm) = Some(Managed { handle, config });
    }

    /// The VM the API drives, if one was created.
    pub fn vm(&self) -> Option<Arc<VmHandle>> {
        lock(&self.vm).as_ref().map(|m| m.handle.clone())
    }

    /// Answers requests, one at a time, until `PUT /v1/vmm/shutdown` or
    /// [`ApiServer::stop`].
    pub fn serve(&self) {
        while !self.stopping.load(Ordering::Acquire) {
            let mut request = match self.server.recv() {
                Ok(r) => r,
                Err(e) => {
                    if !self.stopping.load(Ordering::Acquire) {
                        log::error!("API: cannot receive a request: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    continue;
                }
            };
            let reply = self.answer(&mut request);
            log::debug!("API: {} {} -> {}", request.method(), request.url(), reply.status);
            if let Err(e) = respond(request, reply) {
                log::debug!("API: cannot send the answer: {e}");
            }
        }
        log::info!("API on {} stopped", self.path.display());
    }

    /// Makes [`ApiServer::serve`] return (from another thread).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.server.unblock();
    }

    fn answer(&self, request: &mut Request) -> Reply {
        let path = request.url().split('?').next().unwrap_or_default().to_string();
        if Route::find(&path).is_none() {
            return Reply::error(404, format!("no such path: {path}"));
        }
        if let Some(len) = request.body_length() {
            if len > MAX_BODY {
                return Reply::error(413, format!("the body has {len} bytes; at most {MAX_BODY} are accepted"));
            }
        }
        let mut body = Vec::new();
        if let Err(e) = request.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut body) {
            return Reply::error(400, format!("cannot read the body: {e}"));
        }
        if body.len() > MAX_BODY {
            return Reply::error(413, format!("the body has more than {MAX_BODY} bytes"));
        }
        match parse_request(request.method().as_str(), request.url(), &body) {
            Ok(parsed) => self.execute(parsed),
            Err(reply) => reply,
        }
    }

    /// Carries out one parsed request.
    fn execute(&self, request: ApiRequest) -> Reply {
        match request {
            ApiRequest::Ping => Reply::json(200, &serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })),
            ApiRequest::VmmShutdown => {
                if let Some(vm) = self.vm() {
                    if matches!(vm.state(), VmState::Running | VmState::Paused | VmState::ShuttingDown) {
                        let _ = vm.shutdown(Duration::ZERO);
                    }
                }
                self.stopping.store(true, Ordering::Release);
                Reply::empty(204)
            }
            ApiRequest::CreateVm(config) => self.create(*config),
            ApiRequest::GetVm => self.with_vm(|m| Reply::json(200, &m.handle.info())),
            ApiRequest::GetConfig => {
                self.with_vm(|m| Reply { status: 200, body: Some(m.config.to_json()), allow: None })
            }
            ApiRequest::GetLaunchLog => self.with_vm(|m| Reply::json(200, &m.handle.launch_log())),
            ApiRequest::Boot => self.act(|vm| vm.start().map(|()| Reply::empty(204))),
            ApiRequest::Pause => self.act(|vm| vm.pause().map(|()| Reply::empty(204))),
            ApiRequest::Resume => self.act(|vm| vm.resume().map(|()| Reply::empty(204))),
            ApiRequest::Shutdown(grace) => self.act(|vm| vm.shutdown(grace).map(|()| Reply::empty(202))),
        }
    }

    fn with_vm(&self, f: impl FnOnce(&Managed) -> Reply) -> Reply {
        match lock(&self.vm).as_ref() {
            Some(m) => f(m),
            None => Reply::error(404, "no VM: create one with PUT /v1/vm"),
        }
    }

    /// Runs a handle operation without holding the lock (a pause can take seconds).
    fn act(&self, f: impl FnOnce(&VmHandle) -> Result<Reply, ControlError>) -> Reply {
        match self.vm() {
            Some(vm) => f(&vm).unwrap_or_else(|e| control_error(&e)),
            None => Reply::error(404, "no VM: create one with PUT /v1/vm"),
        }
    }

    fn create(&self, config: VmConfig) -> Reply {
        if let Some(m) = lock(&self.vm).as_ref() {
            let state = m.handle.state();
            if !matches!(state, VmState::Created | VmState::Exited) {
                return Reply::error(
                    409,
                    format!("a VM exists and is {state}; only a VM not yet booted or exited can be replaced"),
                );
            }
        }
        match VmHandle::create(&config, (self.console)()) {
            Ok(handle) => {
                *lock(&self.vm) = Some(Managed { handle: Arc::new(handle), config });
                Reply::empty(204)
            }
            Err(e) => Reply::error(build_error_status(&e), error_chain(&e)),
        }
    }
}

/// A request the API understood: what [`parse_request`] makes of a method, a path and
/// a body, before anything is done with it.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    /// `GET /v1/vmm/ping`.
    Ping,
    /// `PUT /v1/vmm/shutdown`.
    VmmShutdown,
    /// `PUT /v1/vm` with a configuration.
    CreateVm(Box<VmConfig>),
    /// `GET /v1/vm`.
    GetVm,
    /// `GET /v1/vm/config`.
    GetConfig,
    /// `GET /v1/vm/launch-log`.
    GetLaunchLog,
    /// `PUT /v1/vm/boot`.
    Boot,
    /// `PUT /v1/vm/pause`.
    Pause,
    /// `PUT /v1/vm/resume`.
    Resume,
    /// `PUT /v1/vm/shutdown`, with the grace period the body asks for.
    Shutdown(Duration),
}

/// Parses one request (`url` may carry a query string, which is ignored; `body` is
/// what was read, at most [`MAX_BODY`] bytes) into what it asks for, or the error
/// answer: 404 for an unknown path, 405 (with `Allow`) for a method the path does not
/// take, 400 for a body that does not parse. Touches no VM: the fuzz target
/// `api_request` drives it with arbitrary input.
pub fn parse_request(method: &str, url: &str, body: &[u8]) -> Result<ApiRequest, Reply> {
    let path = url.split('?').next().unwrap_or_default();
    let Some(route) = Route::find(path) else {
        return Err(Reply::error(404, format!("no such path: {path}")));
    };
    Ok(match (route, method) {
        (Route::Ping, "GET") => ApiRequest::Ping,
        (Route::VmmShutdown, "PUT") => ApiRequest::VmmShutdown,
        (Route::Vm, "PUT") => ApiRequest::CreateVm(Box::new(vm_config(body)?)),
        (Route::Vm, "GET") => ApiRequest::GetVm,
        (Route::Config, "GET") => ApiRequest::GetConfig,
        (Route::LaunchLog, "GET") => ApiRequest::GetLaunchLog,
        (Route::Boot, "PUT") => ApiRequest::Boot,
        (Route::Pause, "PUT") => ApiRequest::Pause,
        (Route::Resume, "PUT") => ApiRequest::Resume,
        (Route::Shutdown, "PUT") => ApiRequest::Shutdown(shutdown_grace(body)?),
        (route, method) => {
            return Err(Reply {
                allow: Some(route.allowed()),
                ..Reply::error(405, format!("{method} is not allowed here; allowed: {}", route.allowed()))
            })
        }
    })
}

/// The configuration in a `PUT /v1/vm` body.
fn vm_config(body: &[u8]) -> Result<VmConfig, Reply> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(Reply::error(400, "the body is not UTF-8"));
    };
    if text.trim().is_empty() {
        return Err(Reply::error(400, "a VM configuration (JSON) is required; {} is the default VM (the demo guest)"));
    }
    // serde reads a struct from a JSON array too ([1, 2] would be memory 1, vcpus 2);
    // a configuration is an object.
    if !text.trim_start().starts_with('{') {
        return Err(Reply::error(400, "configuration: a VM configuration is a JSON object"));
    }
    VmConfig::from_json(text).map_err(|e| Reply::error(400, error_chain(&e)))
}

/// The grace period a `PUT /v1/vm/shutdown` body asks for.
fn shutdown_grace(body: &[u8]) -> Result<Duration, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DEFAULT_SHUTDOWN_GRACE);
    }
    let parsed: ShutdownBody =
        serde_json::from_slice(body).map_err(|e| Reply::error(400, format!("shutdown request: {e}")))?;
    match parsed.timeout_secs {
        None => Ok(DEFAULT_SHUTDOWN_GRACE),
        Some(s) if s.is_finite() && (0.0..=MAX_SHUTDOWN_SECS).contains(&s) => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(Reply::error(
            400,
            format!("shutdown request: timeout_secs: {s} is not a number of seconds from 0 to {MAX_SHUTDOWN_SECS}"),
        )),
    }
}

fn respond(request: Request, reply: Reply) -> std::io::Result<()> {
    let mut headers = Vec::new();
    if reply.body.is_some() {
        headers.extend(Header::from_bytes("Content-Type", "application/json"));
    }
    if let Some(allow) = reply.allow {
        headers.extend(Header::from_bytes("Allow", allow));
    }
    let body = reply.body.unwrap_or_default();
    let len = body.len();
    let response = Response::new(reply.status.into(), headers, std::io::Cursor::new(body), Some(len), None);
    request.respond(response)
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("cannot remove the API socket {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_into_what_they_ask_for() {
        assert_eq!(parse_request("GET", "/v1/vmm/ping?x=1", b""), Ok(ApiRequest::Ping));
        assert_eq!(parse_request("PUT", "/v1/vm/shutdown", b" "), Ok(ApiRequest::Shutdown(DEFAULT_SHUTDOWN_GRACE)));
        assert_eq!(
            parse_request("PUT", "/v1/vm/shutdown", br#"{"timeout_secs": 2.5}"#),
            Ok(ApiRequest::Shutdown(Duration::from_millis(2500)))
        );
        let Ok(ApiRequest::CreateVm(config)) = parse_request("PUT", "/v1/vm", br#"{"vcpus": 2}"#) else {
            panic!("a configuration parses")
        };
        assert_eq!(config.vcpus, 2);
    }

    #[test]
    fn bad_requests_get_their_status_without_touching_a_vm() {
        let status = |m: &str, u: &str, b: &[u8]| parse_request(m, u, b).unwrap_err().status;
        assert_eq!(status("GET", "/v1/vms", b""), 404);
        let reply = parse_request("DELETE", "/v1/vm", b"").unwrap_err();
        assert_eq!((reply.status, reply.allow), (405, Some("GET, PUT")));
        assert_eq!(status("PUT", "/v1/vm", b""), 400);
        assert_eq!(status("PUT", "/v1/vm", b"[1, 2]"), 400);
        assert_eq!(status("PUT", "/v1/vm", b"\xff{"), 400);
        assert_eq!(status("PUT", "/v1/vm", br#"{"vcpus": "two"}"#), 400);
        assert_eq!(status("PUT", "/v1/vm/shutdown", br#"{"timeout_secs": 1e300}"#), 400);
        assert_eq!(status("PUT", "/v1/vm/shutdown", br#"{"timeout_secs": -1}"#), 400);
    }

    #[test]
    fn every_path_resolves_and_names_its_methods() {
        assert_eq!(Route::find("/v1/vm"), Some(Route::Vm));
        assert_eq!(Route::find("/v1/vm/launch-log"), Some(Route::LaunchLog));
        assert_eq!(Route::find("/v1/vm/"), None);
        assert_eq!(Route::find("/v1/vms"), None);
        assert_eq!(Route::Vm.allowed(), "GET, PUT");
        assert_eq!(Route::Pause.allowed(), "PUT");
    }

    #[test]
    fn shutdown_bodies_are_checked() {
        assert_eq!(shutdown_grace(b"").unwrap(), DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(shutdown_grace(b" {} ").unwrap(), DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(shutdown_grace(br#"{"timeout_secs": 0.5}"#).unwrap(), Duration::from_millis(500));
        assert_eq!(shutdown_grace(br#"{"timeout_secs": 0}"#).unwrap(), Duration::ZERO);
        for bad in [&br#"{"timeout_secs": -1}"#[..], br#"{"timeout_secs": 1e300}"#, br#"{"grace": 1}"#, b"{", b"[]"] {
            assert_eq!(shutdown_grace(bad).unwrap_err().status, 400, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn error_replies_are_json_objects_with_an_error_field() {
        let r = Reply::error(409, "it is \"running\"");
        let v: serde_json::Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(v["error"], "it is \"running\"");
    }
}
