//! A throw-away certificate authority for `tessera demo` and the test suite.
//!
//! Never used by `serve`: production certificates come from files named in config.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// Why a demo certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// A self-signed CA that issues leaf certificates.
pub struct DemoCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM-encoded.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DemoCa {
    pub fn new(name: &str) -> Result<DemoCa, CertGenError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(DemoCa { issuer })
    }

    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issue a leaf for `names` (DNS names or IP literals).
    pub fn issue(&self, names: &[&str]) -> Result<Leaf, CertGenError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Leaf {
    /// Write `<dir>/<stem>.pem` and `<dir>/<stem>.key` (mode 0600 for the key).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(std::path::PathBuf, std::path::PathBuf), CertGenError> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&cert, self.cert_pem.as_bytes(), false)?;
        write_file(&key, self.key_pem.as_bytes(), true)?;
        Ok((cert, key))
    }
}

/// Write a file, optionally private (0600 on Unix), replacing it atomically.
pub fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), CertGenError> {
    let err = |source| CertGenError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp-write");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let _ = private;
        let mut f = opts.open(&tmp).map_err(err)?;
        f.write_all(data).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}
