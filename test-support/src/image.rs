//! Container images written offline for tests of `deis push`: layer tars, an OCI image
//! layout directory and a docker-archive (`docker save`'s classic layout) of them.
//!
//! ```no_run
//! use deis_test_support::image::{layer, oci_layout};
//! let dir = tempfile::tempdir().unwrap();
//! let digest = oci_layout(dir.path(), &[layer("a", 1000, b'a')], "/bin/sh");
//! assert!(digest.starts_with("sha256:"));
//! ```

use std::path::Path;

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A tar holding one file `name` of `size` bytes of `fill`.
pub fn layer(name: &str, size: usize, fill: u8) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, vec![fill; size].as_slice()).expect("a tar in memory");
    b.into_inner().expect("a tar in memory")
}

/// The image config of `layers` (linux/amd64, `Cmd` = `["/bin/sh", "-c", cmd]`).
pub fn config_of(layers: &[Vec<u8>], cmd: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("{:?}", sha256(l))).collect();
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["/bin/sh","-c",{cmd:?}]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    )
    .into_bytes()
}

/// Writes an OCI image layout of `layers` under `dir` (uncompressed layers) with
/// `cmd` as its command; returns the manifest's digest.
pub fn oci_layout(dir: &Path, layers: &[Vec<u8>], cmd: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("the blobs dir");
    let put = |data: &[u8]| {
        let d = sha256(data);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).expect("writing a blob");
        d
    };
    let config = config_of(layers, cmd);
    let descriptors: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}"#,
                put(l),
                l.len()
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
        put(&config),
        config.len(),
        descriptors.join(",")
    );
    let digest = put(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{}}}]}}"#,
        manifest.len()
    );
    std::fs::write(dir.join("index.json"), index).expect("index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    digest
}

/// Writes a docker-archive of `layers` (with `cmd` as its command) to `path`.
pub fn docker_archive(path: &Path, layers: &[Vec<u8>], cmd: &str) {
    let mut b = tar::Builder::new(std::fs::File::create(path).expect("the archive file"));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("writing the archive");
    };
    let names: Vec<String> = (0..layers.len()).map(|i| format!("l{i}/layer.tar")).collect();
    for (name, l) in names.iter().zip(layers) {
        add(name, l);
    }
    add("c.json", &config_of(layers, cmd));
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let manifest = format!(r#"[{{"Config":"c.json","RepoTags":["t:1"],"Layers":[{}]}}]"#, quoted.join(","));
    add("manifest.json", manifest.as_bytes());
    b.into_inner().expect("finishing the archive");
}

/// A layer with busybox (from Debian's `busybox-static`) at `/bin/busybox` and a link
/// per applet, so images built from it run shell commands and `httpd`.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox is missing: apt-get install busybox-static (scripts/install-deps)");
    let bytes = std::fs::read(busybox).expect("reading busybox");
    let list = std::process::Command::new(busybox).arg("--list").output().expect("busybox --list");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    b.append_data(&mut h, "bin/busybox", bytes.as_slice()).expect("a tar in memory");
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet == "busybox" {
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox").expect("a link");
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o1777);
    b.append_data(&mut h, "tmp/", std::io::empty()).expect("tmp");
    b.into_inner().expect("a tar in memory")
}
