//! The per-installation cache of an emulated platform's key chain, shared by the
//! SEV-SNP platform's AMD-style chain ([`crate::snp::certs`]) and the TDX platform's
//! Intel-style chain ([`crate::tdx::certs`]): where a chain lives, how its bundle is
//! loaded or created, published and exported.
//!
//! A chain is one PEM bundle file (its private keys, then its certificates) in a
//! directory of its own under the cvmm cache directory ([`cache_dir`]), mode 0600 in a
//! 0700 directory. A new bundle is written to a temporary file in that directory,
//! synced, then linked to its name, so no reader sees a partial bundle; when the name
//! is already taken by a valid bundle (another process was first), that bundle is
//! adopted instead of ours. A bundle that does not load is regenerated and replaced
//! (renamed over). Exported files (the certificates a verifier trusts) are written the
//! same way, mode 0644, and renamed over whatever is there.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};
use thiserror::Error;

/// Errors from the cache's directories and files.
#[derive(Debug, Error)]
pub enum CacheError {
    /// A file or directory operation failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Neither `$CVMM_CACHE_DIR`, `$XDG_CACHE_HOME` nor `$HOME` is set.
    #[error("no cache directory: set CVMM_CACHE_DIR, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// The OS random number generator failed (naming a temporary file).
    #[error("cannot get random bytes: {0}")]
    Rng(#[source] rand_core::Error),
}

/// A key chain kept in a cache bundle: what [`load`], [`load_or_create`] and
/// [`publish`] need to know of it.
pub(crate) trait CachedChain: Sized {
    /// The chain module's error, which a [`CacheError`] converts into.
    type Error: From<CacheError> + fmt::Display;
    /// What a bundle is checked against and a new chain made with (the SNP chain's RSA
    /// key size; nothing for the TDX chain).
    type Params: Copy;
    /// The bundle's file name in the chain's directory.
    const BUNDLE_FILE: &'static str;
    /// What log lines call the chain ("the emulated AMD key chain").
    const NAME: &'static str;

    /// Parses and checks the bundle `text` read from `path`.
    fn from_bundle(path: &Path, text: &[u8], params: Self::Params) -> Result<Self, Self::Error>;

    /// Generates a new chain.
    fn generate_with(params: Self::Params) -> Result<Self, Self::Error>;

    /// The bundle's text.
    fn bundle(&self) -> Result<String, Self::Error>;
}

/// The directory a chain named `chain_dir` is cached in: `$CVMM_CACHE_DIR/<chain_dir>`,
/// else `$XDG_CACHE_HOME/cvmm/<chain_dir>`, else `$HOME/.cache/cvmm/<chain_dir>` (empty
/// and relative values are ignored, as the XDG specification asks).
pub(crate) fn cache_dir(chain_dir: &str) -> Result<PathBuf, CacheError> {
    cache_dir_from(|name| std::env::var_os(name), chain_dir)
}

/// [`cache_dir`] with the environment as a function.
fn cache_dir_from(env: impl Fn(&str) -> Option<OsString>, chain_dir: &str) -> Result<PathBuf, CacheError> {
    let var = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dir) = var("CVMM_CACHE_DIR") {
        return Ok(dir.join(chain_dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Ok(dir.join("cvmm").join(chain_dir));
    }
    var("HOME").map(|h| h.join(".cache").join("cvmm").join(chain_dir)).ok_or(CacheError::NoCacheDir)
}

/// An [`io::Error`] of `what` on `path` as a [`CacheError`].
fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io { what, path: path.into(), source }
}

/// Loads and checks the bundle at `path`.
pub(crate) fn load<C: CachedChain>(path: &Path, params: C::Params) -> Result<C, C::Error> {
    let text = fs::read(path).map_err(io_err("read", path))?;
    C::from_bundle(path, &text, params)
}

/// Loads the chain cached in `dir`, or generates one and publishes it there
/// ([`publish`]). A bundle that does not load is logged, regenerated and replaced.
pub(crate) fn load_or_create<C: CachedChain>(dir: &Path, params: C::Params) -> Result<C, C::Error> {
    let path = dir.join(C::BUNDLE_FILE);
    let replace = match fs::read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        read => {
            let loaded = read.map_err(io_err("read", &path)).map_err(C::Error::from);
            match loaded.and_then(|text| C::from_bundle(&path, &text, params)) {
                Ok(chain) => return Ok(chain),
                Err(e) => {
                    log::warn!("regenerating {}: {e}", C::NAME);
                    true
                }
            }
        }
    };
    publish(C::generate_with(params)?, dir, replace, params)
}

/// Writes `chain`'s bundle into `dir` (created 0700 if need be) and returns the chain
/// the directory holds afterwards: `chain`, or the valid one another process published
/// first (unless `replace`, which overwrites whatever is there).
pub(crate) fn publish<C: CachedChain>(chain: C, dir: &Path, replace: bool, params: C::Params) -> Result<C, C::Error> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err("create directory", dir))?;
    let path = dir.join(C::BUNDLE_FILE);
    let tmp = write_temp(dir, C::BUNDLE_FILE, chain.bundle()?.as_bytes(), 0o600)?;
    let result = (|| {
        if !replace {
            match fs::hard_link(&tmp, &path) {
                Ok(()) => return Ok(chain),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Another process was first: use its chain if it is valid.
                    if let Ok(theirs) = load::<C>(&path, params) {
                        return Ok(theirs);
                    }
                }
                // A file system without hard links: fall back to rename.
                Err(_) => {}
            }
        }
        fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        Ok(chain)
    })();
    // After a link (or a failed rename) the temporary name is left over.
    let _ = fs::remove_file(&tmp);
    result
}

/// Writes each `(name, text)` of `files` into `dir` (created if need be), mode 0644,
/// replacing what is there; each file appears whole or not at all.
pub(crate) fn export(dir: &Path, files: &[(&str, &str)]) -> Result<(), CacheError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    for (name, text) in files {
        let tmp = write_temp(dir, name, text.as_bytes(), 0o644)?;
        let path = dir.join(name);
        fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
    }
    Ok(())
}

/// Writes `data` to a new temporary file in `dir` (named after `name`) with `mode`,
/// synced to disk, and returns its path.
fn write_temp(dir: &Path, name: &str, data: &[u8], mode: u32) -> Result<PathBuf, CacheError> {
    let mut nonce = [0u8; 8];
    OsRng.try_fill_bytes(&mut nonce).map_err(CacheError::Rng)?;
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), hex::encode(nonce)));
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io_err("create", &tmp))?;
    // The umask may have cleared bits of `mode`; set them exactly.
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_err("set permissions of", &tmp))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io_err("write", &tmp))?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain whose bundle is one line of text; a bundle is valid when it starts with
    /// "toy ".
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Toy(String);

    #[derive(Debug)]
    enum ToyError {
        Cache(CacheError),
        Invalid,
    }

    impl From<CacheError> for ToyError {
        fn from(e: CacheError) -> Self {
            Self::Cache(e)
        }
    }

    impl fmt::Display for ToyError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::Cache(e) => e.fmt(f),
                Self::Invalid => f.write_str("not a toy bundle"),
            }
        }
    }

    impl CachedChain for Toy {
        type Error = ToyError;
        type Params = &'static str;
        const BUNDLE_FILE: &'static str = "toy.pem";
        const NAME: &'static str = "the toy chain";

        fn from_bundle(_: &Path, text: &[u8], _: &'static str) -> Result<Self, ToyError> {
            let text = String::from_utf8(text.to_vec()).map_err(|_| ToyError::Invalid)?;
            text.strip_prefix("toy ").map(|t| Toy(t.to_owned())).ok_or(ToyError::Invalid)
        }

        fn generate_with(name: &'static str) -> Result<Self, ToyError> {
            Ok(Toy(name.to_owned()))
        }

        fn bundle(&self) -> Result<String, ToyError> {
            Ok(format!("toy {}", self.0))
        }
    }

    /// A fresh, absent directory for one test.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cvmm-cert-cache-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn names_in(dir: &Path) -> Vec<OsString> {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn missing_bundle_is_created_private_and_then_reused() {
        let dir = scratch_dir("create");

        let first: Toy = load_or_create(&dir, "first").unwrap();
        let again: Toy = load_or_create(&dir, "second").unwrap();

        assert_eq!(first, Toy("first".into()));
        assert_eq!(again, first, "the cached chain is reused, not regenerated");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(Toy::BUNDLE_FILE)), 0o600);
        assert_eq!(names_in(&dir), [Toy::BUNDLE_FILE], "no temporary file is left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_bundle_is_regenerated_and_replaced() {
        let dir = scratch_dir("invalid");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(Toy::BUNDLE_FILE), "not a bundle").unwrap();

        let chain: Toy = load_or_create(&dir, "fresh").unwrap();

        assert_eq!(chain, Toy("fresh".into()));
        assert_eq!(fs::read_to_string(dir.join(Toy::BUNDLE_FILE)).unwrap(), "toy fresh");
        assert_eq!(names_in(&dir), [Toy::BUNDLE_FILE]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn publishing_second_adopts_a_valid_bundle_and_overwrites_an_invalid_one() {
        let dir = scratch_dir("race");
        publish(Toy("theirs".into()), &dir, false, "").unwrap();

        let adopted = publish(Toy("ours".into()), &dir, false, "").unwrap();
        assert_eq!(adopted, Toy("theirs".into()));

        fs::write(dir.join(Toy::BUNDLE_FILE), "garbage").unwrap();
        let published = publish(Toy("ours".into()), &dir, false, "").unwrap();
        assert_eq!(published, Toy("ours".into()));
        assert_eq!(fs::read_to_string(dir.join(Toy::BUNDLE_FILE)).unwrap(), "toy ours");
        assert_eq!(names_in(&dir), [Toy::BUNDLE_FILE]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replacing_publish_overwrites_a_valid_bundle() {
        let dir = scratch_dir("replace");
        publish(Toy("old".into()), &dir, false, "").unwrap();

        let chain = publish(Toy("new".into()), &dir, true, "").unwrap();

        assert_eq!(chain, Toy("new".into()));
        assert_eq!(load::<Toy>(&dir.join(Toy::BUNDLE_FILE), "").unwrap(), Toy("new".into()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loading_a_missing_bundle_names_the_file() {
        let path = scratch_dir("missing").join(Toy::BUNDLE_FILE);

        let err = load::<Toy>(&path, "").unwrap_err();

        assert!(matches!(&err, ToyError::Cache(CacheError::Io { what: "read", path: p, .. }) if *p == path));
        assert!(err.to_string().starts_with(&format!("cannot read {}: ", path.display())), "{err}");
    }

    #[test]
    fn exported_files_are_world_readable_and_replace_old_ones() {
        let dir = scratch_dir("export");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("a.pem"), "old").unwrap();
        fs::set_permissions(dir.join("a.pem"), fs::Permissions::from_mode(0o600)).unwrap();

        export(&dir, &[("a.pem", "alpha"), ("b.pem", "beta")]).unwrap();

        assert_eq!(fs::read_to_string(dir.join("a.pem")).unwrap(), "alpha");
        assert_eq!(fs::read_to_string(dir.join("b.pem")).unwrap(), "beta");
        assert_eq!((mode(&dir.join("a.pem")), mode(&dir.join("b.pem"))), (0o644, 0o644));
        assert_eq!(names_in(&dir), ["a.pem", "b.pem"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_dir_prefers_cvmm_cache_dir_then_xdg_then_home() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v))
        };
        let all = env(&[("CVMM_CACHE_DIR", "/c"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(all, "snp-chain").unwrap(), Path::new("/c/snp-chain"));
        let xdg = env(&[("CVMM_CACHE_DIR", ""), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(xdg, "tdx-chain").unwrap(), Path::new("/x/cvmm/tdx-chain"));
        let home = env(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(home, "snp-chain").unwrap(), Path::new("/h/.cache/cvmm/snp-chain"));
        assert!(matches!(cache_dir_from(env(&[]), "snp-chain"), Err(CacheError::NoCacheDir)));
    }
}
