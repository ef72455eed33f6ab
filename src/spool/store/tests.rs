use super::*;
use crate::spool::envelope::tests::sample;
use crate::spool::envelope::Kind;
use std::io::BufRead;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

/// A fresh directory, deleted when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        TempDir::under(&std::env::temp_dir(), tag)
    }

    pub(crate) fn under(base: &Path, tag: &str) -> TempDir {
        let p = base.join(format!(
            "smtpd-spool-{tag}-{}-{:08x}",
            std::process::id(),
            random_u64() as u32
        ));
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").mode() & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A message with `n` envelopes and `body`, created and written but not
/// committed.
fn new_message(spool: &Spool, body: &[u8], n: usize) -> (MsgId, Vec<Envelope>) {
    let (msgid, mut f) = spool.create_message().expect("create");
    f.write_all(body).expect("write body");
    let envs = msgid
        .envelope_ids()
        .take(n)
        .enumerate()
        .map(|(i, id)| {
            let mut e = sample(id);
            e.rcpt = format!("rcpt{i}@example.net");
            e.size = body.len() as u64;
            e.body_crc = crc_of(body);
            e
        })
        .collect();
    (msgid, envs)
}

/// What commit records of a message body.
fn crc_of(body: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(body);
    c.finish()
}

fn read_message(spool: &Spool, msgid: MsgId) -> Vec<u8> {
    let mut v = Vec::new();
    spool
        .open_message(msgid)
        .expect("open message")
        .read_to_end(&mut v)
        .expect("read message");
    v
}

#[test]
fn open_creates_the_layout() {
    let t = TempDir::new("layout");
    let spool = Spool::open(t.path()).expect("open");
    for &(name, mode) in DIRS {
        assert_eq!(mode_of(&t.path().join(name)), mode, "{name}");
    }
    drop(spool);
    // Opening again is fine.
    Spool::open(t.path()).expect("reopen");
}

#[test]
fn open_refuses_a_bad_root_or_subdirectory() {
    let t = TempDir::new("badroot");
    let file = t.path().join("file");
    fs::write(&file, b"x").expect("write");
    let e = Spool::open(&file).expect_err("file as root");
    assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
    assert_eq!(
        Spool::open(&t.path().join("missing"))
            .expect_err("missing root")
            .kind(),
        io::ErrorKind::NotFound
    );

    let root = t.path().join("spool");
    fs::create_dir(&root).expect("mkdir");
    let elsewhere = t.path().join("elsewhere");
    fs::create_dir(&elsewhere).expect("mkdir");
    symlink(&elsewhere, root.join("queue")).expect("symlink");
    let e = Spool::open(&root).expect_err("symlinked queue/");
    assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
}

#[test]
fn create_commit_load_recover() {
    let t = TempDir::new("commit");
    let spool = Spool::open(t.path()).expect("open");
    let a = new_message(&spool, b"Subject: a\r\n\r\nhello\r\n", 1);
    let b = new_message(&spool, b"", 3);
    let c = new_message(&spool, &vec![b'x'; 100_000], 2);
    assert_eq!(names(&t.path().join("incoming")).len(), 3);
    assert_eq!(
        mode_of(
            &t.path()
                .join("incoming")
                .join(a.0.to_string())
                .join(MESSAGE)
        ),
        0o600
    );

    let batch = vec![a.clone(), b.clone(), c.clone()];
    let r = spool.commit(&batch);
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    assert!(names(&t.path().join("incoming")).is_empty());
    for (msgid, envs) in &batch {
        let dir = t
            .path()
            .join("queue")
            .join(format!("{:02x}", msgid.bucket()))
            .join(msgid.to_string());
        assert!(dir.is_dir());
        assert_eq!(names(&dir).len(), envs.len() + 1);
        for e in envs {
            assert_eq!(mode_of(&dir.join(e.id.to_string())), 0o600);
            assert_eq!(&spool.load_envelope(e.id).expect("load"), e);
        }
    }
    assert_eq!(read_message(&spool, a.0), b"Subject: a\r\n\r\nhello\r\n");
    assert_eq!(read_message(&spool, c.0).len(), 100_000);
    assert_eq!(
        spool.message_path(b.0),
        t.path()
            .join(format!("queue/{:02x}/{}/message", b.0.bucket(), b.0))
    );

    // A message still being received does not survive a restart.
    let (pending, _) = new_message(&spool, b"unfinished", 1);
    drop(spool);
    let spool = Spool::open(t.path()).expect("reopen");
    let rec = spool.recover();
    assert_eq!(rec.removed_incoming, 1);
    assert!(rec.corrupt.is_empty(), "{:?}", rec.corrupt);
    let mut want: Vec<Envelope> = batch.iter().flat_map(|(_, e)| e.clone()).collect();
    want.sort_by_key(|e| e.id);
    assert_eq!(rec.envelopes, want);
    assert!(names(&t.path().join("incoming")).is_empty());
    assert!(spool.open_message(pending).is_err());
}

#[test]
fn both_flush_modes_commit() {
    for flush in [Flush::Filesystem, Flush::PerFile] {
        let t = TempDir::new("flush");
        let mut spool = Spool::open(t.path()).expect("open");
        spool.set_flush(flush);
        assert_eq!(spool.flush(), flush);
        let batch: Vec<_> = (0..10)
            .map(|i| new_message(&spool, format!("m{i}").as_bytes(), 1 + i % 3))
            .collect();
        assert!(spool.commit(&batch).iter().all(|r| r.is_ok()));
        let rec = spool.recover();
        assert_eq!(
            rec.envelopes.len(),
            batch.iter().map(|(_, e)| e.len()).sum::<usize>()
        );
    }
}

#[test]
fn a_bad_message_fails_alone() {
    let t = TempDir::new("badmsg");
    let spool = Spool::open(t.path()).expect("open");
    let good = new_message(&spool, b"good", 2);
    let (other, _) = new_message(&spool, b"other", 1);
    // Envelopes that belong to another message.
    let (wrong, _) = new_message(&spool, b"wrong", 1);
    let wrong_envs = vec![sample(other.envelope_ids().next().expect("id"))];
    // No envelopes at all.
    let (empty, _) = new_message(&spool, b"empty", 1);
    // The same envelope twice.
    let (twice, envs) = new_message(&spool, b"twice", 1);
    let twice_envs = vec![envs[0].clone(), envs[0].clone()];
    // An envelope that cannot be stored (a newline in a field).
    let (inject, mut envs) = new_message(&spool, b"inject", 1);
    envs[0].helo = "a\r\nb".into();
    // A message that was never created.
    let ghost = MsgId::new(0x00ab_cdef).expect("id");
    let ghost_envs = vec![sample(ghost.envelope_ids().next().expect("id"))];

    let batch = vec![
        (wrong, wrong_envs),
        good.clone(),
        (empty, vec![]),
        (twice, twice_envs),
        (inject, envs),
        (ghost, ghost_envs),
        good.clone(),
    ];
    let r = spool.commit(&batch);
    assert_eq!(
        r[0].as_ref().map_err(|e| e.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
    assert!(r[1].is_ok());
    for (i, res) in r.iter().enumerate().skip(2) {
        assert!(res.is_err(), "#{i} should fail");
    }
    // Failed messages are gone from incoming/; the untouched one is not.
    assert_eq!(names(&t.path().join("incoming")), vec![other.to_string()]);
    assert_eq!(read_message(&spool, good.0), b"good");
    // Abort is idempotent and never touches queue/.
    spool.abort(wrong).expect("abort of a failed message");
    spool
        .abort(good.0)
        .expect("abort of a committed one is a no-op");
    assert_eq!(read_message(&spool, good.0), b"good");
    spool.abort(other).expect("abort");
    assert!(names(&t.path().join("incoming")).is_empty());
}

#[test]
fn a_failed_rename_leaves_no_trace() {
    let t = TempDir::new("rename");
    let spool = Spool::open(t.path()).expect("open");
    let a = new_message(&spool, b"a", 1);
    // Block a's bucket with a file: step 3 fails for a alone.
    let bucket = t.path().join(format!("queue/{:02x}", a.0.bucket()));
    fs::write(&bucket, b"not a directory").expect("write");
    let mut b = new_message(&spool, b"b", 1);
    while b.0.bucket() == a.0.bucket() {
        spool.abort(b.0).expect("abort");
        b = new_message(&spool, b"b", 1);
    }
    let r = spool.commit(&[a.clone(), b.clone()]);
    assert!(r[0].is_err());
    assert!(r[1].is_ok());
    assert!(names(&t.path().join("incoming")).is_empty());
    assert!(spool.open_message(a.0).is_err());
    assert_eq!(read_message(&spool, b.0), b"b");
}

// Disk full: ENOSPC and EDQUOT cannot be produced in a unit test without
// root (a small tmpfs or loop device needs a mount namespace). The
// integration tests mount a tiny tmpfs over the spool; here the mapping
// (`storage_full_is_its_own_kind`) and the clean-up paths of a failing
// step (`a_bad_message_fails_alone`, `a_failed_rename_leaves_no_trace`)
// are tested, which are the paths an ENOSPC takes.

#[test]
fn commit_never_replaces_a_committed_message() {
    let t = TempDir::new("replace");
    let spool = Spool::open(t.path()).expect("open");
    let a = new_message(&spool, b"first", 1);
    assert!(spool.commit(std::slice::from_ref(&a))[0].is_ok());
    // Forge an incoming directory with the same id.
    let dir = t.path().join("incoming").join(a.0.to_string());
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join(MESSAGE), b"second").expect("write");
    let envs = vec![sample(a.0.envelope_ids().next().expect("id"))];
    assert!(spool.commit(&[(a.0, envs)])[0].is_err());
    assert_eq!(read_message(&spool, a.0), b"first");
}

/// A power cut after a commit's rename and before its flush can leave
/// a message in queue/ whose data never reached the disk (it was never
/// acknowledged): recovery tells it by the size and CRC its envelopes
/// recorded, and moves it aside whole instead of delivering it.
#[test]
fn recovery_refuses_a_message_its_envelopes_do_not_match() {
    let t = TempDir::new("torn");
    let spool = Spool::open(t.path()).expect("open");
    let whole = new_message(&spool, b"Subject: whole\r\n\r\nbody\r\n", 1);
    let short = new_message(&spool, b"Subject: short\r\n\r\nbody\r\n", 2);
    let zeroed = new_message(&spool, b"Subject: zero\r\n\r\nbody\r\n", 1);
    let batch = [whole.clone(), short.clone(), zeroed.clone()];
    assert!(spool.commit(&batch).iter().all(|r| r.is_ok()));
    let path = |m: MsgId| spool.message_path(m);
    fs::write(path(short.0), b"Subject: sh").expect("truncate");
    let len = fs::metadata(path(zeroed.0)).expect("stat").len() as usize;
    fs::write(path(zeroed.0), vec![0u8; len]).expect("zero");
    let rec = spool.recover();
    assert_eq!(rec.envelopes, whole.1);
    assert_eq!(rec.corrupt.len(), 2, "{:?}", rec.corrupt);
    for c in &rec.corrupt {
        assert!(c.reason.contains("does not match its envelopes"), "{c:?}");
        assert!(c.moved_to.is_some());
    }
    assert!(!spool.queue_path(short.0).exists());
    assert!(!spool.queue_path(zeroed.0).exists());
}

#[test]
fn update_and_remove() {
    let t = TempDir::new("update");
    let spool = Spool::open(t.path()).expect("open");
    let (msgid, envs) = new_message(&spool, b"body", 2);
    assert!(spool.commit(&[(msgid, envs.clone())])[0].is_ok());

    let mut e = envs[0].clone();
    e.retry += 1;
    e.last_try = 1_700_001_000;
    e.set_last_error(b"451 4.3.0 later\r\n");
    spool.update_envelope(&e).expect("update");
    assert_eq!(spool.load_envelope(e.id).expect("load"), e);
    assert!(names(&t.path().join("temporary")).is_empty());

    // An envelope that cannot be encoded is refused, the old one stays.
    let mut bad = e.clone();
    bad.dest = String::new();
    assert!(spool.update_envelope(&bad).is_err());
    assert_eq!(spool.load_envelope(e.id).expect("load"), e);

    spool.remove_envelope(envs[0].id).expect("remove first");
    assert_eq!(
        spool.load_envelope(envs[0].id).map_err(|e| e.kind()),
        Err(io::ErrorKind::NotFound)
    );
    // An update never brings a removed envelope back.
    assert_eq!(
        spool.update_envelope(&e).map_err(|e| e.kind()),
        Err(io::ErrorKind::NotFound)
    );
    assert_eq!(read_message(&spool, msgid), b"body");
    // The last envelope takes the message with it.
    spool.remove_envelope(envs[1].id).expect("remove last");
    assert!(spool.open_message(msgid).is_err());
    assert!(!t
        .path()
        .join(format!("queue/{:02x}/{msgid}", msgid.bucket()))
        .exists());
    assert!(names(&t.path().join("purge")).is_empty());
    assert!(spool.remove_envelope(envs[1].id).is_err());

    let (m2, envs2) = new_message(&spool, b"other", 3);
    assert!(spool.commit(&[(m2, envs2)])[0].is_ok());
    spool.remove_message(m2).expect("remove message");
    assert!(spool.open_message(m2).is_err());
    assert!(spool.recover().envelopes.is_empty());
}

#[test]
fn storage_full_is_its_own_kind() {
    assert!(is_storage_full(&io::Error::from_raw_os_error(libc::ENOSPC)));
    assert!(is_storage_full(&io::Error::from_raw_os_error(libc::EDQUOT)));
    assert!(is_storage_full(&io::Error::new(
        io::ErrorKind::StorageFull,
        "x"
    )));
    assert!(is_storage_full(&copy_error(&io::Error::from_raw_os_error(
        libc::ENOSPC
    ))));
    assert!(!is_storage_full(&io::Error::from_raw_os_error(libc::EIO)));
    assert!(!is_storage_full(&io::Error::from_raw_os_error(
        libc::EMFILE
    )));

    // Below the free-space threshold nothing new is accepted, and nothing
    // is left behind.
    let t = TempDir::new("full");
    let mut spool = Spool::open(t.path()).expect("open");
    spool.set_min_free_percent(100);
    let e = spool.create_message().expect_err("refused");
    assert!(is_storage_full(&e), "{e:?}");
    assert!(names(&t.path().join("incoming")).is_empty());
    spool.set_min_free_percent(0);
    spool.create_message().expect("accepted");
}

#[test]
fn recover_moves_hostile_entries_aside() {
    let t = TempDir::new("hostile");
    let root = t.path().join("spool");
    fs::create_dir(&root).expect("mkdir");
    let spool = Spool::open(&root).expect("open");
    let good = new_message(&spool, b"good", 2);
    let half = new_message(&spool, b"half", 2);
    assert!(spool
        .commit(&[good.clone(), half.clone()])
        .iter()
        .all(|r| r.is_ok()));
    let q = root.join("queue");
    let mdir = |m: MsgId| q.join(format!("{:02x}", m.bucket())).join(m.to_string());

    // Outside the spool: a secret, and a well-formed message directory a
    // link could point at.
    let outside = t.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    fs::write(outside.join("secret"), b"root:x:0:0").expect("write");
    let lure = new_message(&spool, b"lure", 1);
    assert!(spool.commit(std::slice::from_ref(&lure))[0].is_ok());
    fs::rename(mdir(lure.0), outside.join("lure")).expect("move lure out");

    // One bad envelope in `half`: garbage. The other stays readable.
    fs::write(mdir(half.0).join(half.1[0].id.to_string()), b"garbage\n").expect("write");
    // Stray entries of every kind.
    fs::write(q.join("README"), b"x").expect("write");
    fs::create_dir(q.join("zz")).expect("mkdir");
    fs::create_dir(q.join("AB")).expect("mkdir");
    symlink(&outside, q.join("fe")).expect("symlink bucket");
    let b = q.join(format!("{:02x}", good.0.bucket()));
    symlink(outside.join("lure"), b.join(lure.0.to_string())).expect("symlink message dir");
    fs::create_dir(b.join("not-an-id")).expect("mkdir");
    // A message directory in the wrong bucket.
    let wrong = MsgId::new(0x0100_0001).expect("id");
    fs::create_dir_all(q.join("02").join(wrong.to_string())).expect("mkdir");
    // A message directory without a message file, one without envelopes,
    // one whose message file is a link to the secret, one with an
    // uppercase name.
    let m1 = MsgId::new(0x7700_0001).expect("id");
    let m2 = MsgId::new(0x7700_0002).expect("id");
    let m3 = MsgId::new(0x7700_0003).expect("id");
    let m4 = MsgId::new(0x77ab_cdef).expect("id");
    for m in [m1, m2, m3] {
        fs::create_dir_all(mdir(m)).expect("mkdir");
    }
    let e1 = sample(m1.envelope_ids().next().expect("id"));
    fs::write(mdir(m1).join(e1.id.to_string()), e1.encode().expect("enc")).expect("write");
    fs::write(mdir(m2).join(MESSAGE), b"body").expect("write");
    symlink(outside.join("secret"), mdir(m3).join(MESSAGE)).expect("symlink");
    let e3 = sample(m3.envelope_ids().next().expect("id"));
    fs::write(mdir(m3).join(e3.id.to_string()), e3.encode().expect("enc")).expect("write");
    fs::create_dir_all(q.join("77").join("77ABCDEF")).expect("mkdir");
    let _ = m4;
    // In `good`: an envelope whose id does not match its name, a link to
    // the secret under an envelope name, an oversized file, a socket, a
    // stray name.
    let gdir = mdir(good.0);
    let mut ids = good.0.envelope_ids().skip(100);
    let (i1, i2, i3, i4) = (
        ids.next().expect("id"),
        ids.next().expect("id"),
        ids.next().expect("id"),
        ids.next().expect("id"),
    );
    fs::write(gdir.join(i1.to_string()), good.1[0].encode().expect("enc")).expect("write");
    symlink(outside.join("secret"), gdir.join(i2.to_string())).expect("symlink");
    let big = File::create(gdir.join(i3.to_string())).expect("create");
    big.set_len(100 * 1024 * 1024).expect("sparse");
    let _sock = std::os::unix::net::UnixListener::bind(gdir.join(i4.to_string())).expect("bind");
    fs::write(gdir.join("message.tmp"), b"x").expect("write");
    // Left-overs of interrupted work.
    fs::create_dir_all(root.join("incoming/0badf00d")).expect("mkdir");
    fs::write(root.join("temporary/x.tmp"), b"x").expect("write");
    fs::create_dir_all(root.join("purge/12345678.0/sub")).expect("mkdir");

    drop(spool);
    let spool = Spool::open(&root).expect("reopen");
    let rec = spool.recover();
    let mut want: Vec<Envelope> = good.1.clone();
    want.push(half.1[1].clone());
    want.sort_by_key(|e| e.id);
    assert_eq!(rec.envelopes, want);
    assert_eq!(rec.removed_incoming, 1);
    assert!(names(&root.join("incoming")).is_empty());
    assert!(names(&root.join("temporary")).is_empty());
    assert!(names(&root.join("purge")).is_empty());

    let found: Vec<String> = rec
        .corrupt
        .iter()
        .map(|c| c.path.to_string_lossy().into_owned())
        .collect();
    let expect = [
        "queue/README".to_string(),
        "queue/zz".into(),
        "queue/AB".into(),
        "queue/fe".into(),
        format!("queue/{:02x}/{}", good.0.bucket(), lure.0),
        format!("queue/{:02x}/not-an-id", good.0.bucket()),
        format!("queue/02/{wrong}"),
        format!("queue/77/{m1}"),
        format!("queue/77/{m2}"),
        format!("queue/77/{m3}/message"),
        format!("queue/77/{m3}"),
        "queue/77/77ABCDEF".into(),
        format!("queue/{:02x}/{}/{}", half.0.bucket(), half.0, half.1[0].id),
        format!("queue/{:02x}/{}/{i1}", good.0.bucket(), good.0),
        format!("queue/{:02x}/{}/{i2}", good.0.bucket(), good.0),
        format!("queue/{:02x}/{}/{i3}", good.0.bucket(), good.0),
        format!("queue/{:02x}/{}/{i4}", good.0.bucket(), good.0),
        format!("queue/{:02x}/{}/message.tmp", good.0.bucket(), good.0),
    ];
    for e in &expect {
        assert!(found.contains(e), "{e} not reported; got {found:?}");
    }
    assert_eq!(found.len(), expect.len(), "{found:?}");
    assert!(rec.corrupt.iter().all(|c| c.moved_to.is_some()));
    assert_eq!(names(&root.join("corrupt")).len(), expect.len());
    // Nothing outside was touched or followed.
    assert_eq!(
        fs::read(outside.join("secret")).expect("secret"),
        b"root:x:0:0"
    );
    assert!(outside.join("lure").join(MESSAGE).is_file());
    // A second recovery finds a clean queue.
    let again = spool.recover();
    assert!(again.corrupt.is_empty(), "{:?}", again.corrupt);
    assert_eq!(again.envelopes, want);
    assert_eq!(read_message(&spool, good.0), b"good");
}

#[test]
fn load_refuses_links_and_mismatched_ids() {
    let t = TempDir::new("load");
    let spool = Spool::open(t.path()).expect("open");
    let (msgid, envs) = new_message(&spool, b"x", 2);
    assert!(spool.commit(&[(msgid, envs.clone())])[0].is_ok());
    let p0 = spool.envelope_path(envs[0].id);
    let p1 = spool.envelope_path(envs[1].id);
    fs::remove_file(&p1).expect("rm");
    symlink(&p0, &p1).expect("symlink");
    assert!(spool.load_envelope(envs[1].id).is_err());
    fs::remove_file(&p1).expect("rm");
    fs::copy(&p0, &p1).expect("copy");
    assert_eq!(
        spool.load_envelope(envs[1].id).map_err(|e| e.kind()),
        Err(io::ErrorKind::InvalidData)
    );
    let m = spool.message_path(msgid);
    fs::remove_file(&m).expect("rm");
    symlink("/etc/passwd", &m).expect("symlink");
    assert!(spool.open_message(msgid).is_err());
}

#[test]
fn prepare_checks_owner_and_mode() {
    let t = TempDir::new("prepare");
    let root = t.path().join("spool");
    let uid = crate::sys::process::getuid();
    if uid != 0 {
        // Only root can make root-owned directories.
        assert!(prepare(&root, uid, uid, uid).is_err());
        return;
    }
    prepare(&root, 0, 0, 0).expect("prepare as root");
    assert_eq!(mode_of(&root), 0o711);
    assert_eq!(mode_of(&root.join("offline")), 0o770);
    prepare(&root, 0, 0, 0).expect("idempotent");
    fs::set_permissions(root.join("queue"), fs::Permissions::from_mode(0o755)).expect("chmod");
    assert!(prepare(&root, 0, 0, 0).is_err());
    Spool::open(&root).expect("open what prepare made");
}

// ---- The crash test ----------------------------------------------------

/// The body of message `m`: its length and bytes follow from its id, so
/// the parent can check any message it finds without being told about it.
fn body_for(m: MsgId) -> Vec<u8> {
    let mut x = (m.get() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let len = (x % 20_000) as usize;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// How many envelopes message `m` has.
fn rcpts_for(m: MsgId) -> usize {
    1 + (m.get() as usize % 4)
}

fn envelopes_for(m: MsgId) -> Vec<Envelope> {
    (1..=rcpts_for(m) as u32)
        .map(|low| {
            let id = EvpId::from_parts(m, low).expect("nonzero");
            let mut e = sample(id);
            e.kind = Kind::Local;
            e.size = body_for(m).len() as u64;
            e.body_crc = crc_of(&body_for(m));
            e
        })
        .collect()
}

/// The child: commit batches forever (until killed, or 5 s), writing one
/// line per committed message to `out` after commit returned Ok.
fn crash_child(root: &Path, mut out: std::io::PipeWriter, flush: Flush) -> i32 {
    let Ok(mut spool) = Spool::open(root) else {
        return 2;
    };
    spool.set_flush(flush);
    spool.set_min_free_percent(0);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(5) {
        n += 1;
        let size = 1 + (random_u64() % 12) as usize;
        let mut batch = Vec::new();
        for _ in 0..size {
            let Ok((m, mut f)) = spool.create_message() else {
                return 3;
            };
            if f.write_all(&body_for(m)).is_err() {
                return 4;
            }
            drop(f);
            batch.push((m, envelopes_for(m)));
        }
        // Now and then an uncommitted message stays in incoming/.
        if n.is_multiple_of(5) {
            let _ = spool.create_message();
        }
        let results = spool.commit(&batch);
        for ((m, envs), r) in batch.iter().zip(results) {
            if r.is_err() {
                return 5;
            }
            let line = format!("{m} {}\n", envs.len());
            if out.write_all(line.as_bytes()).is_err() {
                return 6;
            }
        }
    }
    0
}

fn crash_rounds(flush: Flush, rounds: usize) {
    // SPOOL_CRASH_ROUNDS=n runs longer campaigns.
    let rounds = std::env::var("SPOOL_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(rounds);
    let t = TempDir::new("crash");
    let root = t.path();
    Spool::open(root).expect("open");
    let mut acked: Vec<(MsgId, usize)> = Vec::new();
    let (mut unacked_committed, mut cleaned) = (0, 0);
    for round in 0..rounds {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let pid = crate::sys::fsync::fork_child(|| crash_child(root, writer, flush)).expect("fork");
        // Our copy of the write end went into the closure, dropped by the
        // fork in the parent; only the child holds it now.
        let mut reader = std::io::BufReader::new(reader);
        let mut first = String::new();
        if round == 0 {
            // Under load a commit can outlast every random delay: the first
            // round kills only after one acknowledgement, so each run checks
            // at least one acknowledged message. The others kill at random.
            reader.read_line(&mut first).expect("first acknowledgement");
        }
        let delay = 2 + random_u64() % 60;
        std::thread::sleep(Duration::from_millis(delay));
        let _ = crate::sys::process::kill(pid, libc::SIGKILL);
        let status = crate::sys::fsync::wait_child(pid).expect("wait");
        assert!(
            libc::WIFSIGNALED(status) || libc::WEXITSTATUS(status) == 0,
            "child failed with status {}",
            libc::WEXITSTATUS(status)
        );
        let lines = (!first.is_empty()).then(|| Ok(first.trim_end().to_string()));
        for line in lines.into_iter().chain(reader.lines()) {
            let line = line.expect("line");
            let (m, n) = line.split_once(' ').expect("two fields");
            acked.push((MsgId::parse(m).expect("msgid"), n.parse().expect("count")));
        }

        let spool = Spool::open(root).expect("reopen");
        let rec = spool.recover();
        cleaned += rec.removed_incoming;
        assert!(rec.corrupt.is_empty(), "round {round}: {:?}", rec.corrupt);
        assert!(names(&root.join("incoming")).is_empty());
        // Everything in queue/ is whole: its message and all its
        // envelopes, acknowledged or not.
        let mut by_msg: std::collections::BTreeMap<MsgId, Vec<Envelope>> = Default::default();
        for e in rec.envelopes {
            by_msg.entry(e.id.msgid()).or_default().push(e);
        }
        for (m, envs) in &by_msg {
            let mut want = envelopes_for(*m);
            want.sort_by_key(|e| e.id);
            assert_eq!(envs, &want, "round {round}: envelopes of {m}");
            assert_eq!(
                read_message(&spool, *m),
                body_for(*m),
                "round {round}: body of {m}"
            );
        }
        // Every acknowledged message is there.
        for (m, n) in &acked {
            assert_eq!(
                by_msg.get(m).map(|v| v.len()),
                Some(*n),
                "round {round}: acknowledged {m} lost"
            );
        }
    }
    let acked_set: HashSet<MsgId> = acked.iter().map(|(m, _)| *m).collect();
    let spool = Spool::open(root).expect("reopen");
    for e in spool.recover().envelopes {
        if !acked_set.contains(&e.id.msgid()) {
            unacked_committed += 1;
        }
    }
    println!(
        "{flush:?}: {rounds} kills, {} messages acknowledged, {unacked_committed} envelopes \
         committed but not acknowledged, {cleaned} incoming entries cleaned",
        acked.len()
    );
    assert!(!acked.is_empty(), "no child ever committed anything");
}

#[test]
fn crash_test_syncfs() {
    crash_rounds(Flush::Filesystem, 25);
}

#[test]
fn crash_test_per_file() {
    crash_rounds(Flush::PerFile, 15);
}

// ---- Measurements (not tests): cargo test --release -- --ignored --nocapture bench_

fn bench_dirs() -> Vec<PathBuf> {
    match std::env::var_os("SPOOL_BENCH_DIRS") {
        Some(v) => std::env::split_paths(&v).collect(),
        None => {
            let mut v = vec![
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
                std::env::temp_dir(),
            ];
            if Path::new("/dev/shm").is_dir() {
                v.push("/dev/shm".into());
            }
            v
        }
    }
}

/// Each configuration runs REPEATS times for BENCH_TIME, interleaved
/// with the others, and the median is printed: the machines here are
/// shared and their disks noisy. Spool directories are deleted only at the
/// end (deleting thousands of files makes the next journal commits slow,
/// with online discard, and would bias whatever runs next).
const BENCH_TIME: Duration = Duration::from_secs(1);
const REPEATS: usize = 5;

/// One run's figures.
#[derive(Clone, Copy)]
struct Rate {
    /// Messages committed per second, counting create + write + commit.
    messages: f64,
    /// Mean time in `commit()` for one batch, in ms.
    commit_ms: f64,
    /// Mean time in create_message + writing the body, per message, in ms.
    create_ms: f64,
}

/// Commit batches of `batch` messages of 4 KiB with one envelope each.
fn commit_rate(spool: &Spool, batch: usize) -> Rate {
    let body = vec![b'x'; 4096];
    let start = Instant::now();
    let (mut commits, mut in_commit, mut in_create) = (0u64, Duration::ZERO, Duration::ZERO);
    while start.elapsed() < BENCH_TIME {
        let t0 = Instant::now();
        let msgs: Vec<_> = (0..batch).map(|_| new_message(spool, &body, 1)).collect();
        let t1 = Instant::now();
        assert!(spool.commit(&msgs).iter().all(|r| r.is_ok()));
        in_commit += t1.elapsed();
        in_create += t1 - t0;
        commits += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Rate {
        messages: (commits * batch as u64) as f64 / secs,
        commit_ms: in_commit.as_secs_f64() * 1000.0 / commits as f64,
        create_ms: in_create.as_secs_f64() * 1000.0 / (commits * batch as u64) as f64,
    }
}

/// The disk's own rate: write 4 KiB to a new file and fsync it, per second.
fn fsync_rate(dir: &Path) -> f64 {
    let body = vec![b'x'; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < BENCH_TIME {
        let mut f = create_file(&dir.join(n.to_string())).expect("create");
        f.write_all(&body).expect("write");
        f.sync_all().expect("fsync");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore]
fn bench_commit_rates() {
    let configs: Vec<(Flush, usize)> = [Flush::Filesystem, Flush::PerFile]
        .into_iter()
        .flat_map(|f| [1, 8, 32].map(|b| (f, b)))
        .collect();
    for base in bench_dirs() {
        let mut keep = Vec::new();
        let mut raw = Vec::new();
        let mut runs: Vec<Vec<Rate>> = vec![Vec::new(); configs.len()];
        for _ in 0..REPEATS {
            let t = TempDir::under(&base, "fsync");
            raw.push(fsync_rate(t.path()));
            keep.push(t);
            for (i, &(flush, batch)) in configs.iter().enumerate() {
                let t = TempDir::under(&base, "bench");
                let mut spool = Spool::open(t.path()).expect("open");
                spool.set_flush(flush);
                runs[i].push(commit_rate(&spool, batch));
                keep.push(t);
            }
        }
        println!(
            "== {} (median of {REPEATS} runs of {BENCH_TIME:?})",
            base.display()
        );
        println!(
            "  raw: 4 KiB write + fsync of a new file: {:.0}/s",
            median(raw)
        );
        for (i, &(flush, batch)) in configs.iter().enumerate() {
            let m = |f: fn(&Rate) -> f64| median(runs[i].iter().map(f).collect());
            let commit_ms = m(|r| r.commit_ms);
            println!(
                "  {flush:?} batch {batch:>2}: {:>6.0} messages/s overall; commit() {commit_ms:>6.2} ms \
                 = {:>6.0} commits/s = {:>6.0} messages/s; create+write {:.3} ms/message",
                m(|r| r.messages),
                1000.0 / commit_ms,
                batch as f64 * 1000.0 / commit_ms,
                m(|r| r.create_ms),
            );
        }
    }
}
