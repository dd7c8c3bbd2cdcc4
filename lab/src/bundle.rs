//! Every lab image in one file, for a classroom that has no registry and no
//! time to build.
//!
//! An image is a stack of layers (tar archives of files) plus a small JSON
//! config; `docker save` writes the layers of several images into one tar,
//! each shared layer once, and `docker load` reads it back on another
//! machine. `lab images save` wraps that tar in a bundle that says what it
//! holds, so a student's `lab images load` can refuse the wrong file before
//! spending minutes on it:
//!
//! ```text
//! scaling-lab-images-0.1.0.tar.zst    zstd-compressed tar with two members:
//!   manifest.json    format, the lab version, each image's tag, id and input hash,
//!                    and the size and SHA-256 of images.tar
//!   images.tar       what `docker save` wrote
//! ```
//!
//! Why zstd and not gzip: the file is made once by an instructor and
//! unpacked by every student, often at the same moment on the same Wi-Fi.
//! zstd decompresses several times faster than gzip and makes a smaller file
//! at a faster compression level, and its frames carry their own checksum, so
//! a truncated copy fails loudly. `tar --zstd -xf` opens it by hand.
//!
//! Loading streams the file into Docker without unpacking it to disk, and
//! holds back the last chunk until the SHA-256 matches the manifest: Docker
//! only imports a tar it has read to the end, so a damaged file loads nothing.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::images::{Image, VERSION};
use crate::progress::{Counted, Progress, Size, Task};
use crate::runtime::{labels, Runtime, RuntimeError, TarStream};

/// What the first member of a bundle says it is.
pub const FORMAT: &str = "scaling-lab-images";
/// Bumped when the layout above changes; a lab refuses formats it does not know.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const PAYLOAD: &str = "images.tar";
/// zstd's level when none is given. On a 450 MB Debian image like the
/// lab's base, level 3 took 5 s and level 10 took 11 times longer for a file
/// 12% smaller; gzip -6 was slower still and bigger, and took 16 times longer
/// to decompress (bench/bundle/compression.txt). `make bundle` asks for 10:
/// it runs once, and every student downloads the file.
pub const DEFAULT_LEVEL: i32 = 3;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Chunks sent to Docker while loading; the channel holds a few, so memory
/// stays small whatever the size of the file.
const CHUNK: usize = 1 << 20;

#[derive(Error, Debug)]
pub enum BundleError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("image {tag} is missing: run `lab images build` (or `make images`) before saving")]
    Missing { tag: String },
    #[error(
        "image {tag} was built for lab {found}, not {want}: run `lab images build` to rebuild it"
    )]
    ImageVersion {
        tag: String,
        found: String,
        want: String,
    },
    #[error("{file} holds images for lab {bundle} but this lab is {lab}: use the `lab` binary {bundle} that came with it, or a file saved by lab {lab} (`lab images save FILE`)")]
    WrongVersion {
        file: String,
        bundle: String,
        lab: String,
    },
    #[error("{file} is not a lab image bundle ({why}): make one with `lab images save FILE`")]
    NotABundle { file: String, why: String },
    #[error("{file} is damaged ({why}): copy it again from the original")]
    Damaged { file: String, why: String },
    #[error("after loading {file}, {tag} {why}; run `lab images load {file}` again, or `lab images build`")]
    NotLoaded {
        file: String,
        tag: String,
        why: String,
    },
    #[error("Docker stopped sending {tags} ({reason}): check its disk space with `docker system df`, then save again")]
    Export { tags: String, reason: String },
    #[error("the bundle's worker stopped ({0}): run the command again")]
    Interrupted(String),
    #[error("cannot {what} {path}: {reason}")]
    Io {
        what: &'static str,
        path: String,
        reason: String,
    },
}

type Result<T> = std::result::Result<T, BundleError>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BundleError + 'a {
    move |e| BundleError::Io {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The first member of every bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// The `lab` version the images were built for (their tags carry it too).
    pub lab_version: String,
    /// Seconds since 1970, when the bundle was written.
    pub created: u64,
    pub images: Vec<BundledImage>,
    pub payload: Payload,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BundledImage {
    pub tag: String,
    pub id: String,
    /// The hash of everything the image was built from (its label).
    pub input_hash: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Which images go into a bundle, and the version they must carry. The lab
/// saves [`Selection::lab`]; tests save images of their own.
#[derive(Clone, Debug)]
pub struct Selection {
    pub version: String,
    pub tags: Vec<String>,
}

impl Selection {
    /// Every image of this lab version.
    pub fn lab() -> Selection {
        Selection {
            version: VERSION.to_string(),
            tags: Image::ALL.iter().map(|i| i.tag()).collect(),
        }
    }
}

/// The file name `make bundle` gives the images, and the README names.
pub fn default_file_name() -> String {
    format!("scaling-lab-images-{VERSION}.tar.zst")
}

/// What `lab images save` did.
#[derive(Serialize, Clone, Debug)]
pub struct SaveReport {
    pub file: PathBuf,
    pub manifest: Manifest,
    /// Size of the bundle on disk.
    pub bytes: u64,
    pub seconds: f64,
}

/// What `lab images load` did.
#[derive(Serialize, Clone, Debug)]
pub struct LoadReport {
    pub file: PathBuf,
    pub manifest: Manifest,
    /// Docker's own lines, e.g. `Loaded image: scaling-lab/app:0.1.0`.
    pub docker: Vec<String>,
    pub seconds: f64,
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn image_lines(m: &Manifest) -> String {
    let width = m.images.iter().map(|i| i.tag.len()).max().unwrap_or(0);
    m.images
        .iter()
        .map(|i| {
            let hash = if i.input_hash.is_empty() {
                "-"
            } else {
                &i.input_hash
            };
            format!("  {:width$}  inputs {hash}\n", i.tag)
        })
        .collect()
}

impl SaveReport {
    pub fn render(&self) -> String {
        format!(
            "saved {} images for lab {} to {}: {} of layers in {} ({:.0}s)\n{}Load it on another machine with `lab images load {}`.\n",
            self.manifest.images.len(),
            self.manifest.lab_version,
            self.file.display(),
            mib(self.manifest.payload.bytes),
            mib(self.bytes),
            self.seconds,
            image_lines(&self.manifest),
            self.file.display(),
        )
    }
}

impl LoadReport {
    pub fn render(&self) -> String {
        format!(
            "loaded {} images for lab {} from {} ({:.0}s)\n{}Next: `lab up`, or `lab doctor` to check the machine.\n",
            self.manifest.images.len(),
            self.manifest.lab_version,
            self.file.display(),
            self.seconds,
            image_lines(&self.manifest),
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes every selected image into `file` (replaced only once complete).
pub async fn save(
    rt: &dyn Runtime,
    sel: &Selection,
    file: &Path,
    level: i32,
    progress: &dyn Progress,
) -> Result<SaveReport> {
    let started = Instant::now();
    rt.ping().await?;
    let mut images = Vec::new();
    for tag in &sel.tags {
        let info = rt
            .image(tag)
            .await?
            .ok_or_else(|| BundleError::Missing { tag: tag.clone() })?;
        let found = info
            .labels
            .get(labels::VERSION)
            .cloned()
            .unwrap_or_default();
        if found != sel.version {
            return Err(BundleError::ImageVersion {
                tag: tag.clone(),
                found: if found.is_empty() {
                    "no version".into()
                } else {
                    found
                },
                want: sel.version.clone(),
            });
        }
        images.push(BundledImage {
            tag: tag.clone(),
            id: info.id,
            input_hash: info
                .labels
                .get(labels::INPUT_HASH)
                .cloned()
                .unwrap_or_default(),
        });
    }

    // Temporary files beside the target: same disk, and the final rename
    // cannot leave half a bundle under the real name.
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let spool = tempfile::NamedTempFile::new_in(&dir).map_err(io("write into", &dir))?;
    let mut stream = rt.export_images(&sel.tags).await?;
    let task = progress.task("exporting the images from Docker", Size::Bytes(None));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    {
        let mut w = BufWriter::new(spool.as_file());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| BundleError::Export {
                tags: sel.tags.join(" "),
                reason: e.to_string(),
            })?;
            hasher.update(&chunk);
            w.write_all(&chunk).map_err(io("write", spool.path()))?;
            size += chunk.len() as u64;
            task.set_position(size);
        }
        w.flush().map_err(io("write", spool.path()))?;
    }
    drop(task);
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        lab_version: sel.version.clone(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        images,
        payload: Payload {
            name: PAYLOAD.into(),
            bytes: size,
            sha256: hex(&hasher.finalize()),
        },
    };

    let out = tempfile::NamedTempFile::new_in(&dir).map_err(io("write into", &dir))?;
    let task = progress.task("compressing", Size::Bytes(Some(size)));
    let m = manifest.clone();
    let (out, written) = tokio::task::spawn_blocking(move || {
        let written = write_bundle(out.as_file(), spool.path(), &m, level, task);
        (out, written)
    })
    .await
    .map_err(|e| BundleError::Interrupted(e.to_string()))?;
    written.map_err(io("write", file))?;
    out.persist(file).map_err(|e| io("write", file)(e.error))?;
    let bytes = std::fs::metadata(file).map_err(io("read", file))?.len();
    Ok(SaveReport {
        file: file.to_path_buf(),
        manifest,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h
}

fn write_bundle(
    out: &std::fs::File,
    payload: &Path,
    m: &Manifest,
    level: i32,
    task: std::sync::Arc<dyn Task>,
) -> std::io::Result<()> {
    let mut enc = zstd::Encoder::new(BufWriter::new(out), level)?;
    enc.include_checksum(true)?;
    let mut tar = tar::Builder::new(enc);
    let doc = serde_json::to_vec_pretty(m).map_err(std::io::Error::other)?;
    tar.append_data(&mut tar_header(doc.len() as u64), MANIFEST, &doc[..])?;
    let reader = Counted::new(BufReader::new(std::fs::File::open(payload)?), task);
    tar.append_data(&mut tar_header(m.payload.bytes), PAYLOAD, reader)?;
    let enc = tar.into_inner()?;
    enc.finish()?.flush()?;
    out.sync_all()
}

type Entries<'a> = tar::Entries<'a, zstd::Decoder<'static, BufReader<std::fs::File>>>;

/// Opens a bundle, reads and checks its manifest, then hands the manifest
/// and the members after it to `then` (a tar is read once, front to back).
fn open<T>(file: &Path, then: impl FnOnce(Manifest, &mut Entries<'_>) -> Result<T>) -> Result<T> {
    let not = |why: &str| BundleError::NotABundle {
        file: file.display().to_string(),
        why: why.to_string(),
    };
    let mut f = std::fs::File::open(file).map_err(io("open", file))?;
    let mut magic = [0u8; 4];
    if f.read_exact(&mut magic).is_err() || magic != ZSTD_MAGIC {
        return Err(not("not a zstd file"));
    }
    drop(f);
    let f = std::fs::File::open(file).map_err(io("open", file))?;
    let dec = zstd::Decoder::new(f).map_err(io("read", file))?;
    // Past the magic number, a read error means a damaged copy.
    let damaged = |e: std::io::Error| BundleError::Damaged {
        file: file.display().to_string(),
        why: e.to_string(),
    };
    let mut archive = tar::Archive::new(dec);
    let mut entries = archive.entries().map_err(damaged)?;
    let manifest = {
        let mut first = match entries.next() {
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(damaged(e)),
            None => return Err(not("empty")),
        };
        let path = first
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path != MANIFEST {
            return Err(not(&format!("its first member is {path}, not {MANIFEST}")));
        }
        let mut doc = Vec::new();
        first
            .by_ref()
            .take(1 << 20)
            .read_to_end(&mut doc)
            .map_err(damaged)?;
        let m: Manifest =
            serde_json::from_slice(&doc).map_err(|e| not(&format!("manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(not(&format!("its manifest says {:?}", m.format)));
        }
        if m.format_version != FORMAT_VERSION {
            return Err(not(&format!(
                "format {} where this lab reads {FORMAT_VERSION}",
                m.format_version
            )));
        }
        m
    };
    then(manifest, &mut entries)
}

/// Reads a bundle's manifest (what `lab images load` checks first).
pub fn read_manifest(file: &Path) -> Result<Manifest> {
    open(file, |m, _| Ok(m))
}

/// Loads a bundle into the daemon, if it was made for `lab_version`, and
/// checks that every image it names is then present as recorded.
pub async fn load(
    rt: &dyn Runtime,
    file: &Path,
    lab_version: &str,
    progress: &dyn Progress,
) -> Result<LoadReport> {
    let started = Instant::now();
    let manifest = read_manifest(file)?;
    if manifest.lab_version != lab_version {
        return Err(BundleError::WrongVersion {
            file: file.display().to_string(),
            bundle: manifest.lab_version,
            lab: lab_version.to_string(),
        });
    }
    rt.ping().await?;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let task = progress.task(
        "loading into Docker",
        Size::Bytes(Some(manifest.payload.bytes)),
    );
    let path = file.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || feed(&path, tx, task.as_ref()));
    let stream: TarStream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    let imported = rt.import_images(stream).await;
    let fed = reader
        .await
        .map_err(|e| BundleError::Interrupted(e.to_string()))?;
    // A damaged file explains Docker's complaint better than Docker does.
    fed?;
    let docker = imported?;

    for want in &manifest.images {
        let fail = |why: String| BundleError::NotLoaded {
            file: file.display().to_string(),
            tag: want.tag.clone(),
            why,
        };
        let Some(got) = rt.image(&want.tag).await? else {
            return Err(fail("is not in Docker".into()));
        };
        let hash = got
            .labels
            .get(labels::INPUT_HASH)
            .cloned()
            .unwrap_or_default();
        if hash != want.input_hash {
            return Err(fail(format!(
                "has inputs {hash} where the bundle says {}",
                want.input_hash
            )));
        }
    }
    Ok(LoadReport {
        file: file.to_path_buf(),
        manifest,
        docker,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Sends images.tar to the channel in chunks, hashing as it goes; the last
/// chunk is sent only once size and hash match the manifest.
fn feed(
    file: &Path,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    task: &dyn Task,
) -> Result<()> {
    // If the manifest cannot be read again, `tx` drops and Docker sees a
    // cut tar: nothing is imported.
    open(file, |m, entries| feed_payload(file, &m, entries, tx, task))
}

fn feed_payload(
    file: &Path,
    m: &Manifest,
    entries: &mut Entries<'_>,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    task: &dyn Task,
) -> Result<()> {
    let damaged = |why: String| BundleError::Damaged {
        file: file.display().to_string(),
        why,
    };
    let refuse = |tx: &tokio::sync::mpsc::Sender<_>, why: &str| {
        let _ = tx.blocking_send(Err(std::io::Error::other(why.to_string())));
    };
    let mut payload = match entries.next() {
        Some(Ok(e)) => e,
        Some(Err(e)) => {
            refuse(&tx, "damaged");
            return Err(damaged(e.to_string()));
        }
        None => {
            refuse(&tx, "damaged");
            return Err(damaged(format!("it has no {PAYLOAD}")));
        }
    };
    let name = payload
        .path()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name != m.payload.name || payload.size() != m.payload.bytes {
        refuse(&tx, "damaged");
        return Err(damaged(format!(
            "its second member is {name} of {} bytes, the manifest says {} of {}",
            payload.size(),
            m.payload.name,
            m.payload.bytes
        )));
    }
    let mut hasher = Sha256::new();
    let mut held: Option<Bytes> = None;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = match payload.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                refuse(&tx, "damaged");
                return Err(damaged(e.to_string()));
            }
        };
        if n == 0 {
            break;
        }
        buf.truncate(n);
        hasher.update(&buf);
        task.inc(n as u64);
        if let Some(prev) = held.replace(Bytes::from(buf)) {
            if tx.blocking_send(Ok(prev)).is_err() {
                // Docker stopped reading: its error is the one to report.
                return Ok(());
            }
        }
    }
    let sum = hex(&hasher.finalize());
    if sum != m.payload.sha256 {
        refuse(&tx, "damaged");
        return Err(damaged(format!(
            "SHA-256 of {PAYLOAD} is {sum}, the manifest says {}",
            m.payload.sha256
        )));
    }
    if let Some(last) = held {
        let _ = tx.blocking_send(Ok(last));
    }
    Ok(())
}

/// `lab images save FILE`.
pub async fn save_command(
    rt: &dyn Runtime,
    file: &Path,
    level: i32,
    progress: &dyn Progress,
) -> Result<SaveReport> {
    save(rt, &Selection::lab(), file, level, progress).await
}

/// `lab images load FILE`.
pub async fn load_command(
    rt: &dyn Runtime,
    file: &Path,
    progress: &dyn Progress,
) -> Result<LoadReport> {
    load(rt, file, VERSION, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::runtime::fake::FakeRuntime;

    fn lab_images(rt: &FakeRuntime, version: &str) {
        for (n, i) in Image::ALL.iter().enumerate() {
            let hash = format!("hash{n}");
            rt.add_image(
                &i.tag(),
                &[(labels::VERSION, version), (labels::INPUT_HASH, &hash)],
            );
        }
    }

    #[tokio::test]
    async fn save_then_load_restores_every_image() {
        let rt = FakeRuntime::new();
        lab_images(&rt, VERSION);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("images.tar.zst");
        let saved = save_command(&rt, &file, DEFAULT_LEVEL, &Silent)
            .await
            .unwrap();
        assert_eq!(saved.manifest.images.len(), Image::ALL.len());
        assert_eq!(saved.manifest.lab_version, VERSION);
        assert!(saved.render().contains("scaling-lab/postgres"));
        // Only the bundle is left in the directory: no spool, no partial file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let empty = FakeRuntime::new();
        let loaded = load_command(&empty, &file, &Silent).await.unwrap();
        assert_eq!(loaded.docker.len(), Image::ALL.len(), "{:?}", loaded.docker);
        for (n, i) in Image::ALL.iter().enumerate() {
            let img = empty.image(&i.tag()).await.unwrap().expect("restored");
            assert_eq!(img.labels[labels::INPUT_HASH], format!("hash{n}"));
        }
        assert_eq!(read_manifest(&file).unwrap(), saved.manifest);
    }

    #[tokio::test]
    async fn saving_needs_every_image_of_this_version() {
        let rt = FakeRuntime::new();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.tar.zst");
        let err = save_command(&rt, &file, DEFAULT_LEVEL, &Silent)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("lab images build"), "{err}");
        lab_images(&rt, "0.0.1");
        let err = save_command(&rt, &file, DEFAULT_LEVEL, &Silent)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("built for lab 0.0.1"), "{err}");
        assert!(!file.exists());
    }

    #[tokio::test]
    async fn another_version_is_refused_in_one_line_naming_both() {
        let rt = FakeRuntime::new();
        lab_images(&rt, "9.9.9");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old.tar.zst");
        let sel = Selection {
            version: "9.9.9".into(),
            tags: Image::ALL.iter().map(|i| i.tag()).collect(),
        };
        save(&rt, &sel, &file, 1, &Silent).await.unwrap();
        let target = FakeRuntime::new();
        let err = load_command(&target, &file, &Silent)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("9.9.9") && err.contains(VERSION), "{err}");
        assert!(err.contains("lab images save"), "{err}");
        assert!(!err.contains('\n'));
        // Nothing reached Docker.
        assert!(target.calls().is_empty(), "{:?}", target.calls());
    }

    #[tokio::test]
    async fn other_files_are_not_bundles() {
        let rt = FakeRuntime::new();
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("x.tar.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
        let err = load_command(&rt, &gz, &Silent)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a lab image bundle"), "{err}");

        // A zstd tar whose first member is something else.
        let other = dir.path().join("other.tar.zst");
        let mut t = tar::Builder::new(Vec::new());
        t.append_data(&mut tar_header(2), "hello.txt", &b"hi"[..])
            .unwrap();
        let data = zstd::encode_all(&t.into_inner().unwrap()[..], 3).unwrap();
        std::fs::write(&other, data).unwrap();
        let err = load_command(&rt, &other, &Silent)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("hello.txt"), "{err}");

        let missing = dir.path().join("nope.tar.zst");
        let err = load_command(&rt, &missing, &Silent)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot open"), "{err}");
    }

    /// A bundle whose images.tar does not match its manifest loads nothing.
    #[tokio::test]
    async fn a_damaged_payload_is_caught_before_docker_gets_it_all() {
        let rt = FakeRuntime::new();
        lab_images(&rt, VERSION);
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.tar.zst");
        let saved = save_command(&rt, &good, DEFAULT_LEVEL, &Silent)
            .await
            .unwrap();

        // Same manifest, payload with one byte changed: rebuilt by hand.
        let mut members = Vec::new();
        let dec = zstd::Decoder::new(std::fs::File::open(&good).unwrap()).unwrap();
        let mut a = tar::Archive::new(dec);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            members.push((name, data));
        }
        assert_eq!(members[0].0, MANIFEST);
        assert_eq!(members[1].0, PAYLOAD);
        let at = members[1].1.len() / 3;
        members[1].1[at] ^= 0x20;
        let mut t = tar::Builder::new(Vec::new());
        for (name, data) in &members {
            t.append_data(&mut tar_header(data.len() as u64), name, &data[..])
                .unwrap();
        }
        let bad = dir.path().join("bad.tar.zst");
        std::fs::write(
            &bad,
            zstd::encode_all(&t.into_inner().unwrap()[..], 3).unwrap(),
        )
        .unwrap();

        let target = FakeRuntime::new();
        let err = load_command(&target, &bad, &Silent)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is damaged") && err.contains("SHA-256"),
            "{err}"
        );
        for i in &saved.manifest.images {
            assert!(target.image(&i.tag).await.unwrap().is_none());
        }

        // A truncated copy: zstd notices.
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.tar.zst");
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let err = load_command(&target, &cut, &Silent)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is damaged"), "{err}");
    }
}
