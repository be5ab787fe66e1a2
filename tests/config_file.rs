//! `cvmm run --config vm.json`: the file describes the VM, flags override it,
//! `--print-config` shows the result, and a bad file is named.

mod common;

use common::{cvmm, temp_file};

#[test]
fn the_file_configures_the_vm_and_flags_override_it() {
    let config = temp_file("vm.json", br#"{"vcpus": 3, "memory": "128M", "rng": true}"#);
    let out = cvmm().args(["run", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Hello from the cvmm demo guest: 3 vCPUs, 128 MiB of memory\nrng: "), "{text}");

    let out = cvmm().args(["run", "--vcpus", "2", "--config"]).arg(&config).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Hello from the cvmm demo guest: 2 vCPUs, 128 MiB"));
}

#[test]
fn print_config_shows_the_effective_configuration_and_it_reads_back() {
    let config = temp_file("vm.json", br#"{"memory": "64M", "disks": [{"path": "/x.img", "read_only": true}]}"#);
    let out = cvmm().args(["run", "--vcpus", "4", "--print-config", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let json = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["vcpus"], 4);
    assert_eq!(v["memory"], 64 << 20);
    assert_eq!(v["disks"][0]["read_only"], true);
    // What --print-config prints is itself a valid configuration.
    let again = temp_file("again.json", json.as_bytes());
    let out = cvmm().args(["run", "--print-config", "--config"]).arg(&again).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), json);
}

#[test]
fn unknown_fields_bad_values_and_missing_files_are_named() {
    for (text, needle) in [
        (r#"{"vcpu": 2}"#, "unknown field `vcpu`"),
        (r#"{"memory": "lots"}"#, "memory:"),
        (r#"{"vcpus": 0}"#, "vcpus: 0 is not a valid vCPU count"),
        ("{", "configuration:"),
    ] {
        let config = temp_file("bad.json", text.as_bytes());
        let out = cvmm().args(["run", "--config"]).arg(&config).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(needle), "{text}: expected {needle:?} in {err:?}");
        assert!(out.stdout.is_empty());
    }
    let out = cvmm().args(["run", "--config", "/nonexistent/vm.json"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the configuration /nonexistent/vm.json"));
}
