//! End to end with real Docker: the classroom path of docs/teaching.md. The
//! lab's images go into one file, come back out of it, and a lab started
//! from them serves through its loopback entry point.
//!
//! How this test avoids pulling the floor from under others: the lab's
//! images (`scaling-lab/*:VERSION`) are shared by every end-to-end test
//! running at the same moment, so this test never removes them. It saves
//! them with `lab images save` and loads that file back with `lab images
//! load` under the same tags: Docker then finds every layer already there
//! and re-points each tag at the very same image id, which no running test
//! can notice. Proving that a *removed* image comes back needs an image no
//! one else uses, so the test makes its own: a tiny image of one file,
//! unique to this run, under a repository named after this process, with
//! the lab's labels and a version of its own. It is saved through the same
//! library code `lab images save` uses, removed with `docker rmi`, and must
//! come back from the file with the same id and labels. The lock another
//! design would need (stop every other test while the real tags are gone)
//! would serialise the whole suite; this one needs none.

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{docker_ready, lab, TestLab};
use lab::bundle::{self, Selection};
use lab::progress::Silent;
use lab::runtime::{labels, DockerRuntime, Runtime};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An image that exists for one test and is removed when dropped.
struct PrivateImage {
    tag: String,
}

impl PrivateImage {
    /// `docker import` of a one-file tar: no registry, no build, a layer
    /// whose content (and so whose id) no other run shares.
    fn new(version: &str, input_hash: &str) -> PrivateImage {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let tag = format!(
            "scaling-lab-e2e-bundle-{}/probe:{version}",
            std::process::id()
        );
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("probe.tar");
        let mut b = tar::Builder::new(Vec::new());
        let body = format!("probe {nanos}\n");
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "probe.txt", body.as_bytes()).unwrap();
        std::fs::write(&tar_path, b.into_inner().unwrap()).unwrap();
        let o = docker(&[
            "import",
            "--change",
            &format!("LABEL {}={version}", labels::VERSION),
            "--change",
            &format!("LABEL {}={input_hash}", labels::INPUT_HASH),
            tar_path.to_str().unwrap(),
            &tag,
        ]);
        assert!(o.status.success(), "docker import: {}", stderr(&o));
        PrivateImage { tag }
    }

    fn id(&self) -> Option<String> {
        let o = docker(&["image", "inspect", "--format", "{{.Id}}", &self.tag]);
        o.status.success().then(|| stdout(&o).trim().to_string())
    }
}

impl Drop for PrivateImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn save_load_restore_up_serve_down() {
    if !docker_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // 1. Every lab image into one file, with the CLI a class gets.
    let file = dir.path().join(bundle::default_file_name());
    let file_arg = file.to_str().unwrap();
    let o = lab(&["images", "save", file_arg]);
    assert!(o.status.success(), "save: {}", stderr(&o));
    let manifest = bundle::read_manifest(&file).unwrap();
    assert_eq!(manifest.lab_version, VERSION);
    let tags: Vec<&str> = manifest.images.iter().map(|i| i.tag.as_str()).collect();
    for name in ["base", "app", "balancer", "redis", "postgres"] {
        let tag = format!("scaling-lab/{name}:{VERSION}");
        assert!(tags.contains(&tag.as_str()), "{tag} not in {tags:?}");
    }
    // The input hashes recorded are the ones Docker has.
    for i in &manifest.images {
        let o = docker(&[
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{}\"}}}}", labels::INPUT_HASH),
            &i.tag,
        ]);
        assert_eq!(stdout(&o).trim(), i.input_hash, "{}", i.tag);
    }

    // 2. Loaded back under the same tags (see the module comment).
    let o = lab(&["images", "load", file_arg]);
    assert!(o.status.success(), "load: {}", stderr(&o));
    assert!(stdout(&o).contains("loaded 5 images"), "{}", stdout(&o));

    // 3. A removed image comes back from its file, same id, same labels.
    let own_version = format!("0.0.0-e2e.{}", std::process::id());
    let probe = PrivateImage::new(&own_version, "feedfacefeedface");
    let id = probe.id().expect("the probe image exists");
    let rt = DockerRuntime::connect().await.unwrap();
    let probe_file = dir.path().join("probe.tar.zst");
    let sel = Selection {
        version: own_version.clone(),
        tags: vec![probe.tag.clone()],
    };
    bundle::save(&rt, &sel, &probe_file, bundle::DEFAULT_LEVEL, &Silent)
        .await
        .unwrap();
    let o = docker(&["rmi", &probe.tag]);
    assert!(o.status.success(), "rmi: {}", stderr(&o));
    assert_eq!(probe.id(), None, "the probe should be gone");

    // The CLI refuses it: another version, named with ours and the fix.
    let o = lab(&["images", "load", probe_file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&own_version) && err.contains(VERSION) && err.contains("lab images save"),
        "{err}"
    );
    assert_eq!(probe.id(), None, "a refused bundle loads nothing");

    let loaded = bundle::load(&rt, &probe_file, &own_version, &Silent)
        .await
        .unwrap();
    assert_eq!(loaded.manifest.images[0].tag, probe.tag);
    assert_eq!(probe.id().as_deref(), Some(id.as_str()));
    let img = rt.image(&probe.tag).await.unwrap().unwrap();
    assert_eq!(img.labels[labels::INPUT_HASH], "feedfacefeedface");

    // A damaged copy (one byte flipped past the manifest) loads nothing.
    drop(probe);
    let mut bytes = std::fs::read(&probe_file).unwrap();
    let at = bytes.len() - 64;
    bytes[at] ^= 0xff;
    let bad = dir.path().join("bad.tar.zst");
    std::fs::write(&bad, bytes).unwrap();
    let err = bundle::load(&rt, &bad, &own_version, &Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is damaged"), "{err}");
    let back = docker(&["image", "inspect", &sel.tags[0]]);
    let _ = docker(&["rmi", "-f", &sel.tags[0]]);
    assert!(!back.status.success(), "a damaged bundle loaded an image");

    // 4. A lab from the loaded images serves through loopback.
    let t = TestLab::new("e2e-bundle");
    let out = t.ok(&["up", "--servers", "1", "--replicas", "0", "--port", "0"]);
    assert!(out.contains("Entry point"), "{out}");
    let base = t.entrypoint();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let r = reqwest::get(format!("{base}/")).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["x-served-by"], "server-1");

    // lab doctor: the port a lab's balancer holds is that lab's, not a failure.
    let port = base.rsplit(':').next().unwrap();
    let check = port_check(&t.lab(&["doctor", "--json", "--port", port]));
    assert_eq!(check["status"], "ok", "{check}");
    assert!(
        check["detail"].as_str().unwrap().contains(&t.name),
        "{check}"
    );
    // For any other lab, that port is taken, and the fix names its owner.
    let o = lab(&["--lab", "another-lab", "doctor", "--json", "--port", port]);
    assert_eq!(o.status.code(), Some(1));
    let check = port_check(&o);
    assert_eq!(check["status"], "fail", "{check}");
    assert!(check["fix"].as_str().unwrap().contains(&t.name), "{check}");

    t.ok(&["down"]);
    assert!(t.leftovers().is_empty(), "{:?}", t.leftovers());
}

fn port_check(o: &std::process::Output) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "port")
        .cloned()
        .unwrap()
}
