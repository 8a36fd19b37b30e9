use super::*;

use crate::backend::test_pkg as pkg;

#[test]
fn listing_table() {
    let text = "\
Image: /usr/lib/modules/6.1.0/initramfs.img: 33M
========================================================================
Version: dracut-059-4

Arguments:  --force --reproducible --no-hostonly

dracut modules:
systemd
========================================================================
crw-r--r--   1 root     root       5,   1 Mar  9  2023 dev/console
drwxr-xr-x  12 root     root            0 Mar  9  2023 .
lrwxrwxrwx   1 root     root            7 Mar  9  2023 bin -> usr/bin
lrwxrwxrwx   1 root     root            7 Mar  9  2023 bin -> usr/bin
-rwxr-xr-x   1 root     root      1234 Mar  9 12:01 usr/bin/bash
-rw-r--r--   1 root     root        10 Mar  9  2023 usr/share/a file
prw-r--r--   1 root     root         0 Mar  9  2023 run/fifo
========================================================================
";
    assert_eq!(
        parse_listing(text),
        ["", "bin", "run/fifo", "usr/bin/bash", "usr/share/a file"]
    );
}

#[test]
fn every_part_changes_the_slot() {
    let base = slot("6.1", &["dracut", "-f"], &[pkg("dracut", "059")], Some("1"));
    for other in [
        slot("6.2", &["dracut", "-f"], &[pkg("dracut", "059")], Some("1")),
        slot("6.1", &["dracut"], &[pkg("dracut", "059")], Some("1")),
        slot("6.1", &["dracut", "-f"], &[pkg("dracut", "060")], Some("1")),
        slot("6.1", &["dracut", "-f"], &[pkg("dracut", "059")], None),
    ] {
        assert_ne!(other, base);
    }
}

/// A tree standing in for a composed one: what an image holds, what
/// dracut reads, a module directory and the image itself.
fn tree(d: &Path) -> (Tree, std::path::PathBuf) {
    let root = d.join("rootfs");
    for dir in [
        "usr/bin",
        "usr/lib/dracut/modules.d/50keelson",
        "usr/lib/modules/6.1/kernel",
        "etc/keelson",
    ] {
        fs_err::create_dir_all(root.join(dir)).unwrap();
    }
    fs_err::write(root.join("usr/bin/bash"), "bash").unwrap();
    fs_err::write(
        root.join("usr/lib/dracut/modules.d/50keelson/module-setup.sh"),
        "x",
    )
    .unwrap();
    fs_err::write(root.join("usr/lib/modules/6.1/kernel/virtio.ko"), "ko").unwrap();
    fs_err::write(root.join("usr/lib/os-release"), "VERSION=12").unwrap();
    fs_err::write(root.join("etc/keelson/agent.toml"), "a").unwrap();
    let img = root.join("usr/lib/modules/6.1/initramfs.img");
    fs_err::write(&img, "image v1").unwrap();
    (Tree::open(&root).unwrap(), img)
}

const OUT: &str = "usr/lib/modules/6.1/initramfs.img";

/// Restores when nothing dracut sees changed; misses on each kind of
/// change it would see; a damaged image is removed, never used.
#[test]
fn reuse_only_with_equal_inputs() {
    let d = tempfile::tempdir().unwrap();
    let (t, img) = tree(d.path());
    let root = t.root().to_path_buf();
    let cache = InitramfsCache::open(&d.path().join("initramfs")).unwrap();
    let listed: Vec<String> = ["", "usr", "usr/bin", "usr/bin/bash"]
        .map(String::from)
        .to_vec();
    cache.store("s", &t, &listed, "6.1", OUT, &img).unwrap();
    fs_err::remove_file(&img).unwrap();
    let hit = |slot: &str| cache.restore(slot, &t, OUT, &img).unwrap();

    // unrelated file changed: reused, byte for byte
    fs_err::write(root.join("etc/keelson/agent.toml"), "b").unwrap();
    assert!(hit("s"));
    assert_eq!(fs_err::read_to_string(&img).unwrap(), "image v1");
    assert!(!hit("other slot"));

    type Change<'a> = Box<dyn Fn() + 'a>;
    let changes: Vec<(&str, Change, Change)> = vec![
        (
            "a file in the image",
            Box::new(|| fs_err::write(root.join("usr/bin/bash"), "bash2").unwrap()),
            Box::new(|| fs_err::write(root.join("usr/bin/bash"), "bash").unwrap()),
        ),
        (
            "a new file next to the image's",
            Box::new(|| fs_err::write(root.join("usr/bin/sh"), "").unwrap()),
            Box::new(|| fs_err::remove_file(root.join("usr/bin/sh")).unwrap()),
        ),
        (
            "a mode in the image",
            Box::new(|| {
                fs_err::set_permissions(
                    root.join("usr/bin/bash"),
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .unwrap()
            }),
            Box::new(|| {
                fs_err::set_permissions(
                    root.join("usr/bin/bash"),
                    std::os::unix::fs::PermissionsExt::from_mode(0o644),
                )
                .unwrap()
            }),
        ),
        (
            "a dracut module file",
            Box::new(|| {
                fs_err::write(
                    root.join("usr/lib/dracut/modules.d/50keelson/module-setup.sh"),
                    "y",
                )
                .unwrap()
            }),
            Box::new(|| {
                fs_err::write(
                    root.join("usr/lib/dracut/modules.d/50keelson/module-setup.sh"),
                    "x",
                )
                .unwrap()
            }),
        ),
        (
            "a dracut config appearing",
            Box::new(|| {
                fs_err::create_dir_all(root.join("etc/dracut.conf.d")).unwrap();
                fs_err::write(root.join("etc/dracut.conf.d/x.conf"), "").unwrap()
            }),
            Box::new(|| fs_err::remove_dir_all(root.join("etc/dracut.conf.d")).unwrap()),
        ),
        (
            "os-release",
            Box::new(|| fs_err::write(root.join("usr/lib/os-release"), "VERSION=13").unwrap()),
            Box::new(|| fs_err::write(root.join("usr/lib/os-release"), "VERSION=12").unwrap()),
        ),
        (
            "a kernel module added",
            Box::new(|| {
                fs_err::write(root.join("usr/lib/modules/6.1/kernel/e1000.ko"), "").unwrap()
            }),
            Box::new(|| {
                fs_err::remove_file(root.join("usr/lib/modules/6.1/kernel/e1000.ko")).unwrap()
            }),
        ),
    ];
    for (what, change, undo) in &changes {
        change();
        assert!(!hit("s"), "{what}: must not reuse");
        undo();
        assert!(hit("s"), "{what} undone: reused again");
    }

    // damage: the cached image cut short
    let (key, _) = cache.dir.keys().unwrap().remove(0);
    fs_err::write(cache.dir.data(&key), "image").unwrap();
    fs_err::remove_file(&img).unwrap();
    assert!(!hit("s"), "a truncated entry is not used");
    assert!(!cache.dir.data(&key).exists(), "and it is removed");
    assert!(!img.exists());
    // dracut runs again and the image is stored again: rebuilt
    let rebuilt = d.path().join("rebuilt.img");
    fs_err::write(&rebuilt, "image v1").unwrap();
    cache.store("s", &t, &listed, "6.1", OUT, &rebuilt).unwrap();
    assert!(hit("s"));
    assert_eq!(fs_err::read_to_string(&img).unwrap(), "image v1");

    // an unreadable manifest (cut short by a crash of the disk, say) is
    // removed with its entry
    let (key, _) = cache.dir.keys().unwrap().remove(0);
    fs_err::write(cache.dir.manifest(&key), "{\"slot\":").unwrap();
    assert!(!hit("s"));
    assert!(cache.dir.keys().unwrap().is_empty());
}
