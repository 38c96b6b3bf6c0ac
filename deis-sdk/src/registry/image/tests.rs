//! Reading docker-archives: layouts of several docker versions, refusals.

use std::io::Write;

use super::*;

fn tar_of(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&b.into_inner().unwrap()).unwrap();
    f
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Docker 25 and later save an OCI layout inside the archive: layers are named by
/// their digest, and a gzipped one keeps its digest and gets the gzip media type.
#[test]
fn layers_named_by_digest_keep_it_and_gzip_is_recognised() {
    let plain = b"plain layer bytes".to_vec();
    let gzipped = vec![0x1f, 0x8b, 8, 0, 1, 2, 3];
    let config = format!(
        r#"{{"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
        sha(&plain),
        sha(b"the uncompressed bytes")
    );
    let (p, g) = (format!("blobs/sha256/{}", &sha(&plain)[7..]), format!("blobs/sha256/{}", &sha(&gzipped)[7..]));
    let manifest = format!(r#"[{{"Config":"blobs/sha256/c","Layers":["{p}","{g}"]}}]"#);
    let f = tar_of(&[
        (&p, &plain),
        (&g, &gzipped),
        ("blobs/sha256/c", config.as_bytes()),
        ("manifest.json", manifest.as_bytes()),
    ]);
    let image = LocalImage::from_docker_archive(f.path()).unwrap();
    assert_eq!(image.layers[0].digest(), sha(&plain));
    assert_eq!(image.layers[0].descriptor.media_type, OCI_LAYER_TAR);
    assert_eq!(image.layers[1].digest(), sha(&gzipped));
    assert_eq!(image.layers[1].descriptor.media_type, OCI_LAYER_GZIP);
    let mut read = Vec::new();
    image.layers[1].open().unwrap().read_to_end(&mut read).unwrap();
    assert_eq!(read, gzipped, "a blob reads exactly its bytes from the archive");
    // The manifest made for it is what is pushed, and names every blob.
    let m = manifest::parse_manifest(&image.manifest).unwrap();
    assert_eq!(m.layers.len(), 2);
    assert_eq!(m.config.digest, sha(config.as_bytes()));
}

#[test]
fn layer_counts_must_agree_and_images_from_a_manifest_have_no_bytes() {
    let config = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#, sha(b"x"));
    let f = tar_of(&[
        ("a/layer.tar", b"x"),
        ("b/layer.tar", b"y"),
        ("c.json", config.as_bytes()),
        ("manifest.json", br#"[{"Config":"c.json","Layers":["a/layer.tar","b/layer.tar"]}]"#),
    ]);
    let e = LocalImage::from_docker_archive(f.path()).unwrap_err();
    assert!(e.to_string().contains("lists 2 layers but the image config 1"), "{e}");

    let f = tar_of(&[
        ("a/layer.tar", b"x"),
        ("c.json", config.as_bytes()),
        ("manifest.json", br#"[{"Config":"c.json","Layers":["a/layer.tar"]}]"#),
    ]);
    let image = LocalImage::from_docker_archive(f.path()).unwrap();
    let known = LocalImage::from_manifest(image.manifest.clone(), OCI_MANIFEST).unwrap();
    assert_eq!(known.digest(), image.digest());
    assert_eq!(known.size(), image.size());
    assert!(known.layers[0].open().is_err(), "an image known by its manifest has no bytes at hand");
}
