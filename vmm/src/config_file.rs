//! The JSON form of a [`VmConfig`] (`cvmm run --config vm.json`, `--print-config`).
//!
//! Schema (every field optional; unknown fields are rejected):
//!
//! ```json
//! {
//!   "memory": "256M",             // or a number of bytes
//!   "vcpus": 1,
//!   "kernel": "/path/vmlinux",    // absent: the demo guest
//!   "initrd": "/path/initrd",
//!   "cmdline": "console=ttyS0",
//!   "kvm_device": "/dev/kvm",
//!   "timeout_secs": 30.0,
//!   "console": false,
//!   "disks": [{ "path": "/path/disk.img", "read_only": false }],
//!   "net": { "tap": "tap0" },     // or { "socket": "/path/net.sock" },
//!                                 // or { "file": { "path": "/path/frames", "rx": "/path/in" } },
//!                                 // or { "ring": { "path": "/dev/shm/ring", "size": "4M" } }
//!   "vsock": { "cid": 3, "socket": "/path/vsock.sock" },
//!   "rng": false,
//!   "seccomp": true,
//!   "guest_memory": "dump",       // "dontdump" or "lock"
//!   "tee": { "type": "snp", "emulated": true, "policy": 196608,
//!            "host-data": "<base64 of 32 bytes>", "id-block": "<base64>",
//!            "id-auth": "<base64>", "author-key-enabled": false }  // absent: a plain VM
//! }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{DiskConfig, GuestMemoryPolicy, KernelSource, NetConfig, SnpConfig, Tee, VmConfig, VsockConfig};

/// Errors from reading a configuration file, naming the field at fault.
#[derive(Debug, Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid JSON for the schema (serde names the field and position).
    #[error("configuration: {0}")]
    Json(#[from] serde_json::Error),
    /// A field with a value outside its domain.
    #[error("configuration: {field}: {message}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// A memory size: `"256M"` or a number of bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct DiskFile {
    path: PathBuf,
    #[serde(default)]
    read_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum NetFile {
    Tap(String),
    Socket(PathBuf),
    File {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rx: Option<PathBuf>,
    },
    Ring {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<Size>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct VsockFile {
    cid: u64,
    socket: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    initrd: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kvm_device: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_secs: Option<f64>,
    #[serde(default)]
    console: bool,
    #[serde(default)]
    disks: Vec<DiskFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    net: Option<NetFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vsock: Option<VsockFile>,
    #[serde(default)]
    rng: bool,
    #[serde(default = "yes")]
    seccomp: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guest_memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tee: Option<TeeFile>,
}

/// The TEE section, with QEMU's sev-snp-guest option names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct TeeFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    emulated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<u64>,
    #[serde(default, rename = "host-data", skip_serializing_if = "Option::is_none")]
    host_data: Option<String>,
    #[serde(default, rename = "id-block", skip_serializing_if = "Option::is_none")]
    id_block: Option<String>,
    #[serde(default, rename = "id-auth", skip_serializing_if = "Option::is_none")]
    id_auth: Option<String>,
    #[serde(default, rename = "author-key-enabled")]
    author_key_enabled: bool,
    #[serde(default, rename = "certs-file", skip_serializing_if = "Option::is_none")]
    certs_file: Option<PathBuf>,
}

impl TeeFile {
    fn to_tee(&self) -> Result<Tee, ConfigFileError> {
        if self.kind == "tdx" {
            return Ok(Tee::Tdx(crate::config::TdxConfig::new(self.emulated)));
        }
        if self.kind != "snp" {
            return Err(field("tee.type")(format!("'{}' is not a TEE cvmm knows (snp, tdx)", self.kind)));
        }
        let mut snp = SnpConfig { emulated: self.emulated, certs_file: self.certs_file.clone(), ..Default::default() };
        let set = |snp: &mut SnpConfig, key: &str, value: &str| {
            snp.options.set(key, value).map_err(|e| ConfigFileError::Field { field: "tee", message: e.to_string() })
        };
        if let Some(p) = self.policy {
            snp.options.policy = p;
        }
        for (key, value) in [("host-data", &self.host_data), ("id-block", &self.id_block), ("id-auth", &self.id_auth)] {
            if let Some(v) = value {
                set(&mut snp, key, v)?;
            }
        }
        snp.options.author_key_enabled = self.author_key_enabled;
        snp.options.check().map_err(|e| ConfigFileError::Field { field: "tee", message: e.to_string() })?;
        Ok(Tee::Snp(snp))
    }

    fn from_tee(tee: &Tee) -> Option<TeeFile> {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        match tee {
            Tee::None => None,
            Tee::Tdx(t) => Some(TeeFile {
                kind: "tdx".into(),
                emulated: t.emulated,
                policy: None,
                host_data: None,
                id_block: None,
                id_auth: None,
                author_key_enabled: false,
                certs_file: None,
            }),
            Tee::Snp(s) => Some(TeeFile {
                kind: "snp".into(),
                emulated: s.emulated,
                policy: Some(s.options.policy),
                host_data: Some(b64(&s.options.host_data)),
                id_block: s.options.id_block.as_ref().map(|b| b64(&b[..])),
                id_auth: s.options.id_auth.as_ref().map(|b| b64(&b[..])),
                author_key_enabled: s.options.author_key_enabled,
                certs_file: s.certs_file.clone(),
            }),
        }
    }
}

fn yes() -> bool {
    true
}

fn field(field: &'static str) -> impl Fn(String) -> ConfigFileError {
    move |message| ConfigFileError::Field { field, message }
}

impl VmConfig {
    /// Parses a JSON configuration (unknown fields rejected) and checks each field's
    /// domain; [`VmConfig::validate`] still runs at build time.
    pub fn from_json(text: &str) -> Result<VmConfig, ConfigFileError> {
        let f: ConfigFile = serde_json::from_str(text)?;
        let d = VmConfig::default();
        let memory = match f.memory {
            None => d.memory,
            Some(Size::Bytes(b)) => b,
            Some(Size::Text(t)) => arch::layout::parse_size(&t).map_err(field("memory"))?,
        };
        let timeout = match f.timeout_secs {
            None => None,
            Some(s) if s > 0.0 && s.is_finite() && s < 1e9 => Some(Duration::from_secs_f64(s)),
            Some(s) => return Err(field("timeout_secs")(format!("{s} is not a positive number of seconds"))),
        };
        let vsock = match f.vsock {
            None => None,
            Some(v) => Some(
                format!("cid={},socket={}", v.cid, v.socket.display())
                    .parse::<VsockConfig>()
                    .map_err(field("vsock"))?,
            ),
        };
        let net = match f.net {
            None => None,
            Some(NetFile::Tap(name)) => Some(format!("tap={name}").parse::<NetConfig>().map_err(field("net"))?),
            Some(NetFile::Socket(p)) if !p.as_os_str().is_empty() => Some(NetConfig::Socket(p)),
            Some(NetFile::Socket(_)) => return Err(field("net")("socket path is empty".into())),
            Some(NetFile::File { path, rx }) => {
                if path.as_os_str().is_empty() || rx.as_ref().is_some_and(|r| r.as_os_str().is_empty()) {
                    return Err(field("net")("file paths must not be empty".into()));
                }
                Some(NetConfig::File { tx: path, rx })
            }
            Some(NetFile::Ring { path, size }) => {
                let size = match size {
                    None => None,
                    Some(Size::Bytes(b)) => Some(b),
                    Some(Size::Text(t)) => Some(arch::layout::parse_size(&t).map_err(field("net"))?),
                };
                Some(NetConfig::ring(path, size).map_err(field("net"))?)
            }
        };
        let guest_memory = match f.guest_memory {
            None => GuestMemoryPolicy::default(),
            Some(s) => s.parse().map_err(field("guest_memory"))?,
        };
        Ok(VmConfig {
            memory,
            vcpus: f.vcpus.unwrap_or(d.vcpus),
            kernel: f.kernel.map_or(KernelSource::Demo, KernelSource::File),
            initrd: f.initrd,
            cmdline: f.cmdline,
            kvm_device: f.kvm_device.unwrap_or(d.kvm_device),
            timeout,
            rng: f.rng,
            console: f.console,
            disks: f.disks.into_iter().map(|d| DiskConfig { path: d.path, read_only: d.read_only }).collect(),
            net,
            vsock,
            seccomp: f.seccomp,
            guest_memory,
            tee: f.tee.as_ref().map(TeeFile::to_tee).transpose()?.unwrap_or_default(),
        })
    }

    /// Reads [`VmConfig::from_json`] from a file.
    pub fn from_json_file(path: &std::path::Path) -> Result<VmConfig, ConfigFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: path.into(), source })?;
        Self::from_json(&text)
    }

    /// The configuration as JSON, in the schema [`VmConfig::from_json`] reads.
    pub fn to_json(&self) -> String {
        let f = ConfigFile {
            memory: Some(Size::Bytes(self.memory)),
            vcpus: Some(self.vcpus),
            kernel: match &self.kernel {
                KernelSource::Demo => None,
                KernelSource::File(p) => Some(p.clone()),
            },
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            kvm_device: Some(self.kvm_device.clone()),
            timeout_secs: self.timeout.map(|t| t.as_secs_f64()),
            console: self.console,
            disks: self.disks.iter().map(|d| DiskFile { path: d.path.clone(), read_only: d.read_only }).collect(),
            net: self.net.as_ref().map(|n| match n {
                NetConfig::Tap(t) => NetFile::Tap(t.clone()),
                NetConfig::Socket(p) => NetFile::Socket(p.clone()),
                NetConfig::File { tx, rx } => NetFile::File { path: tx.clone(), rx: rx.clone() },
                NetConfig::Ring { path, size } => {
                    NetFile::Ring { path: path.clone(), size: Some(Size::Bytes(*size as u64)) }
                }
            }),
            vsock: self.vsock.as_ref().map(|v| VsockFile { cid: v.cid, socket: v.uds_path.clone() }),
            rng: self.rng,
            seccomp: self.seccomp,
            guest_memory: Some(
                match self.guest_memory {
                    GuestMemoryPolicy::Dump => "dump",
                    GuestMemoryPolicy::DontDump => "dontdump",
                    GuestMemoryPolicy::Lock => "lock",
                }
                .into(),
            ),
            tee: TeeFile::from_tee(&self.tee),
        };
        serde_json::to_string_pretty(&f).expect("a configuration serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_object_is_the_default_configuration() {
        assert_eq!(VmConfig::from_json("{}").unwrap(), VmConfig::default());
    }

    #[test]
    fn every_field_round_trips() {
        let text = r#"{
            "memory": "512M", "vcpus": 2, "kernel": "/k", "initrd": "/i", "cmdline": "quiet",
            "kvm_device": "/dev/kvm", "timeout_secs": 2.5, "console": true,
            "disks": [{"path": "/d.img", "read_only": true}, {"path": "/e.img"}],
            "net": {"socket": "/n.sock"}, "vsock": {"cid": 7, "socket": "/v.sock"},
            "rng": true, "seccomp": false, "guest_memory": "dontdump",
            "tee": {"type": "snp", "emulated": true, "policy": 196608,
                    "host-data": "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="}
        }"#;
        let c = VmConfig::from_json(text).unwrap();
        assert_eq!(c.memory, 512 << 20);
        assert_eq!(c.kernel, KernelSource::File("/k".into()));
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.disks[0], DiskConfig { path: "/d.img".into(), read_only: true });
        assert!(!c.disks[1].read_only);
        assert_eq!(c.vsock.as_ref().unwrap().cid, 7);
        assert_eq!(c.guest_memory, GuestMemoryPolicy::DontDump);
        assert!(!c.seccomp);
        let Tee::Snp(snp) = &c.tee else { panic!("not SNP") };
        assert!(snp.emulated);
        assert_eq!((snp.options.policy, snp.options.host_data[0], snp.options.host_data[31]), (0x30000, 1, 32));
        assert_eq!(VmConfig::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn a_net_file_backend_round_trips_with_and_without_its_rx_file() {
        let c = VmConfig::from_json(r#"{"net": {"file": {"path": "/w", "rx": "/r"}}}"#).unwrap();
        assert_eq!(c.net, Some(NetConfig::File { tx: "/w".into(), rx: Some("/r".into()) }));
        assert_eq!(VmConfig::from_json(&c.to_json()).unwrap(), c);
        let c = VmConfig::from_json(r#"{"net": {"file": {"path": "/w"}}}"#).unwrap();
        assert_eq!(c.net, Some(NetConfig::File { tx: "/w".into(), rx: None }));
        assert_eq!(VmConfig::from_json(&c.to_json()).unwrap(), c);
        let err = VmConfig::from_json(r#"{"net": {"file": {"path": ""}}}"#).unwrap_err().to_string();
        assert!(err.starts_with("configuration: net:"), "{err}");
    }

    #[test]
    fn a_net_ring_backend_round_trips_with_and_without_its_size() {
        let c = VmConfig::from_json(r#"{"net": {"ring": {"path": "/dev/shm/r", "size": "1M"}}}"#).unwrap();
        assert_eq!(c.net, Some(NetConfig::Ring { path: "/dev/shm/r".into(), size: 1 << 20 }));
        assert_eq!(VmConfig::from_json(&c.to_json()).unwrap(), c);
        let c = VmConfig::from_json(r#"{"net": {"ring": {"path": "/r", "size": 262144}}}"#).unwrap();
        assert_eq!(c.net, Some(NetConfig::Ring { path: "/r".into(), size: 256 << 10 }));
        let c = VmConfig::from_json(r#"{"net": {"ring": {"path": "/r"}}}"#).unwrap();
        assert_eq!(c.net, Some(NetConfig::Ring { path: "/r".into(), size: 4 << 20 }));
        assert_eq!(VmConfig::from_json(&c.to_json()).unwrap(), c);
        for bad in [r#"{"path": ""}"#, r#"{"path": "/r", "size": "3001K"}"#, r#"{"path": "/r", "size": 1000}"#] {
            let err = VmConfig::from_json(&format!(r#"{{"net": {{"ring": {bad}}}}}"#)).unwrap_err().to_string();
            assert!(err.starts_with("configuration: net:"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_values_name_the_field() {
        let err = VmConfig::from_json(r#"{"memroy": "1G"}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `memroy`"), "{err}");
        let err = VmConfig::from_json(r#"{"memory": "lots"}"#).unwrap_err().to_string();
        assert!(err.starts_with("configuration: memory:"), "{err}");
        let err = VmConfig::from_json(r#"{"vsock": {"cid": 2, "socket": "/v"}}"#).unwrap_err().to_string();
        assert!(err.starts_with("configuration: vsock:"), "{err}");
        let err = VmConfig::from_json(r#"{"timeout_secs": -1}"#).unwrap_err().to_string();
        assert!(err.starts_with("configuration: timeout_secs:"), "{err}");
        let err = VmConfig::from_json(r#"{"vcpus": "two"}"#).unwrap_err().to_string();
        assert!(err.contains("vcpus") || err.contains("invalid type"), "{err}");
        assert!(VmConfig::from_json(r#"{"disks": [{"path": "/d", "ro": true}]}"#).is_err());
        assert!(VmConfig::from_json("not json").is_err());
        let err = VmConfig::from_json(r#"{"tee": {"type": "sgx"}}"#).unwrap_err().to_string();
        assert!(err.starts_with("configuration: tee.type:"), "{err}");
        let err = VmConfig::from_json(r#"{"tee": {"type": "snp", "host-data": "AAAA"}}"#).unwrap_err().to_string();
        assert!(err.contains("host-data"), "{err}");
    }
}
